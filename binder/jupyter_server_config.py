"""Jupyter on Binder: open on the lessons, and offer the MLflow UI as a launcher (jupyter-server-proxy).

binder/postBuild copies this file into Jupyter's config directory; the server command lives in coursekit.ui.
"""

from coursekit.ui import proxy_server

c = get_config()  # noqa: F821 (Jupyter provides get_config when it loads this file)

# Both: Binder's hub starts a plain Jupyter server, `jupyter lab` starts JupyterLab's app, each with its own default.
c.ServerApp.default_url = c.LabApp.default_url = "/lab/tree/lessons"
c.ServerProxy.servers = {"mlflow": proxy_server()}
