"""The deployment files as an operator uses them: the Makefile's production target, the
systemd units, the settings file docs/production.md describes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.processes import ROOT, require_tool
from order_service.config import Settings


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


# --- systemd -----------------------------------------------------------------------------------

UNITS = ROOT / "deploy" / "systemd"
SERVICES = ("orderbus-api", "orderbus-relay@", "orderbus-webhooks", "orderbus-socketio")
HARDENING_MARK = "# The hardening every orderbus unit shares"


def _installed_units(tmp_path: Path) -> tuple[Path, Path]:
    """The units as an operator installs them, /srv/orderbus being a deployment made here: this
    checkout's virtualenv, a prod.env, a data directory."""
    home, units = tmp_path / "srv-orderbus", tmp_path / "units"
    (home / "var").mkdir(parents=True)
    (home / ".venv").symlink_to(Path(sys.prefix))
    (home / "prod.env").write_text("ORDERBUS_API_WORKERS=4\n")
    units.mkdir()
    for unit in UNITS.iterdir():
        (units / unit.name).write_text(unit.read_text().replace("/srv/orderbus", str(home)))
    return home, units


def _verify(units: Path, names: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            require_tool("systemd-analyze", "systemd", "the systemd units are verified with it"),
            "verify",
            "--man=no",
            *(f"./{name}" for name in names),
        ],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_systemd_units_verify(tmp_path: Path):
    """`systemd-analyze verify` on every unit of deploy/systemd/: no error, no warning (unknown
    keys, a command that is not there, a unit required but missing)."""
    _, units = _installed_units(tmp_path)
    names = sorted(p.name for p in units.iterdir())
    result = _verify(units, names)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # positive control: the same check catches a typo and a missing command
    broken = units / "orderbus-webhooks.service"
    broken.write_text(broken.read_text().replace("Restart=always", "Restart=always\nRestartSecs=2"))
    broken.write_text(
        broken.read_text().replace(
            "order_service.webhooks", "order_service.webhooks\nExecStartPre=/nonexistent/x"
        )
    )
    result = _verify(units, names)
    assert "RestartSecs" in result.stderr and "/nonexistent/x" in result.stderr, result.stderr


def test_every_orderbus_service_runs_unprivileged_after_migrate_with_the_same_hardening():
    """Each process of the system runs as `orderbus`, from prod.env, after orderbus-migrate (migrate
    and bootstrap), part of orderbus.target, with the hardening block of orderbus-migrate.service."""
    hardening = (
        (UNITS / "orderbus-migrate.service").read_text().split(HARDENING_MARK)[1].split("[Install]")[0]
    )
    assert "ProtectSystem=strict" in hardening and "NoNewPrivileges=yes" in hardening
    target = (UNITS / "orderbus.target").read_text()
    for name in (*SERVICES, "orderbus-migrate", "orderbus-backup"):
        text = (UNITS / f"{name}.service").read_text()
        assert "\nUser=orderbus\n" in text and "\nEnvironmentFile=/srv/orderbus/prod.env\n" in text, name
        assert text.split(HARDENING_MARK)[1].split("[Install]")[0].strip() == hardening.strip(), name
        if name in SERVICES:
            assert (
                "Requires=orderbus-migrate.service" in text
                and "orderbus-migrate.service" in (text.split("After=")[1].split("\n")[0])
            ), name
            assert "PartOf=orderbus.target" in text and "Restart=always" in text, name
    wanted = ("migrate", "api", "relay@1", "relay@2", "webhooks", "socketio")
    assert all(f"orderbus-{name}.service" in target for name in wanted)
    migrate = (UNITS / "orderbus-migrate.service").read_text()
    assert "order_service migrate\n" in migrate and "order_service bootstrap\n" in migrate
    assert migrate.index("order_service migrate") < migrate.index("order_service bootstrap")


# --- docs/production.md ------------------------------------------------------------------------


def _settings_blocks() -> list[list[str]]:
    """The code blocks of docs/production.md that are lines of prod.env."""
    text = (ROOT / "docs" / "production.md").read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    return [block.splitlines() for block in blocks if block.startswith("ORDERBUS_")]


def test_production_settings_are_lines_systemd_reads():
    """prod.env is read by systemd (EnvironmentFile: KEY=value, no `export`, no quotes, no comment
    after a value) and by `set -a; . ./prod.env`: every line the docs give is such a line, of a
    setting that exists."""
    fields = {f"ORDERBUS_{name.upper()}" for name in Settings.model_fields}
    blocks = _settings_blocks()
    assert len(blocks) >= 2  # the first run's settings, and the TLS ones
    for line in (line for block in blocks for line in block):
        assert re.fullmatch(r"ORDERBUS_[A-Z0-9_]+=[^\s'\"#]+", line), line
        assert line.split("=", 1)[0] in fields, line
