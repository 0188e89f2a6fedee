"""Settings for the whole test session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def own_config_home(tmp_path_factory):
    """The grader keeps its re-grading secret in $XDG_CONFIG_HOME (grader/regrade.py): the tests' gradings, and the
    processes they start, keep theirs in a folder of the session's, never in the real home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        yield
