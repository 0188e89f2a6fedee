"""Tests that need the bubblewrap sandbox: skip with the reason where it cannot run, fail where set-up installed it."""

from __future__ import annotations

import os
import shutil

import pytest

from grader import sandbox


def require_bwrap(purpose: str) -> None:
    box = sandbox.create(sandbox.Limits())
    if box.isolated:
        return
    if os.geteuid() == 0 and shutil.which("bwrap"):  # set-up installed it: a sandbox that fails here is a bug
        pytest.fail(f"bubblewrap is installed but the sandbox does not work: {box.description}")
    pytest.skip(f"{purpose} needs the bubblewrap sandbox: {box.description}")
