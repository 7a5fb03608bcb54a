"""External programs some tests run (openssl, systemd-analyze, nginx): found, or the test is
skipped with the package to install; with CI=true a missing one fails the test instead."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str, what: str, *, also: tuple[str, ...] = ()) -> str:
    """The path of ``name`` (on PATH, else the first of ``also`` that exists)."""
    found = shutil.which(name) or next((path for path in also if os.access(path, os.X_OK)), None)
    if found is None:
        message = f"{name} is not installed (apt-get install {package}): {what}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run installs it")
        pytest.skip(message)
    return found
