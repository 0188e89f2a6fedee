"""A real browser for the tests: Debian's headless Chromium, driven over the DevTools protocol (no driver, no
download). Without chromium the tests that need it skip and say why."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/system-deps.sh installs it when run as root)"
)


class Chromium:
    """Headless Chromium driven over the DevTools protocol: Debian's browser, no driver, no download."""

    def __init__(self, profile: Path, host_rules: str):
        self.profile = profile
        self.host_rules = host_rules
        self.calls = 0

    def __enter__(self) -> Chromium:
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--window-size=1600,1000",
             f"--host-resolver-rules={self.host_rules}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            self.socket = websocket.create_connection(self.page_socket(), timeout=30, suppress_origin=True)
        except BaseException:
            self.stop()
            raise
        return self

    def page_socket(self) -> str:
        port_file = self.profile / "DevToolsActivePort"  # Chromium writes the port it picked there
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        # Chromium writes the port before its first page exists: ask again until the page is listed.
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                pages = [target for target in json.load(response) if target["type"] == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not pages:
            raise RuntimeError(f"Chromium listed no page within 30 s (DevTools port {port})")
        return pages[0]["webSocketDebuggerUrl"]

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)  # the browser and its helper processes
        self.process.wait(timeout=30)

    def __exit__(self, *exc_info) -> None:
        self.socket.close()
        self.stop()

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message["result"]

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return result["result"].get("value", "")

    def open(self, url: str, until, timeout: float) -> str:
        """Navigate to ``url``; return the page's text once ``until(text)`` holds, or when time runs out."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not until(text := self.text()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return text

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
