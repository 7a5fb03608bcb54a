"""The deployment files as an operator uses them: the Makefile's production target, the
systemd units, the reverse proxy's and Mosquitto's production configuration."""

from __future__ import annotations

import subprocess

from tests.test_processes import ROOT


def _dry_run(target: str, *touched: str) -> str:
    """The commands ``make <target>`` would run with ``touched`` files newer than what was built."""
    args = ["make", "--no-print-directory", "-n", *(f"-W{path}" for path in touched), target]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_run_prod_installs_the_dashboards_mqtt_js_before_starting():
    """`make run-prod` serves the admin dashboard, whose mqtt.js comes from `npm ci` in clients/admin:
    with its lock file newer than the install, the target reinstalls it before honcho starts."""
    commands = _dry_run("run-prod", "clients/admin/package-lock.json")
    assert "npm ci" in commands, commands
    assert commands.index("npm ci") < commands.index("honcho start -f Procfile.production")
    # positive control: without the touched lock file nothing is reinstalled (node_modules is current)
    if (ROOT / "clients/admin/node_modules/.package-lock.json").exists():
        assert "npm ci" not in _dry_run("run-prod")


def test_the_deployments_settings_file_is_never_committed():
    """prod.env (docs/production.md step 2) holds the database password: git ignores it."""
    ignored = subprocess.run(["git", "check-ignore", "-q", "prod.env"], cwd=ROOT)
    assert ignored.returncode == 0
    tracked = subprocess.run(["git", "check-ignore", "-q", "Procfile.production"], cwd=ROOT)
    assert tracked.returncode == 1  # positive control: an ordinary file is not ignored
