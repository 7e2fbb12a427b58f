"""The shipped systemd units (pinsyncd/data/systemd; systemd/ in the source tree links there)
are valid for systemd (`systemd-analyze verify`), and the timer's service runs one cycle as
the daemon's user, under the daemon's hardening."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import pinsyncd.data

ROOT = Path(__file__).resolve().parent.parent
UNITS = Path(pinsyncd.data.__file__).parent / "systemd"
DAEMON = UNITS / "pinsyncd.service"
ONE_CYCLE = UNITS / "pinsyncd-sync.service"
TIMER = UNITS / "pinsyncd-sync.timer"
SERVE = UNITS / "pinsyncd-serve.service"
EXECUTABLE = "/usr/local/bin/pinsyncd"


def lines(unit: Path) -> list[str]:
    """The unit's settings, comments and blank lines left out."""
    text = unit.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def service_settings(unit: Path) -> list[str]:
    """The settings of the [Service] section that say who runs it and how it is confined:
    everything from DynamicUser= on."""
    settings = lines(unit)
    start = settings.index("DynamicUser=yes")
    end = next((i for i, s in enumerate(settings) if i > start and s.startswith("[")), None)
    return settings[start:end]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_verify(tmp_path: Path) -> None:
    fake = tmp_path / "pinsyncd"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in (DAEMON, ONE_CYCLE, TIMER, SERVE):
        text = unit.read_text(encoding="utf-8")
        (units / unit.name).write_text(text.replace(EXECUTABLE, str(fake)))
    env = dict(os.environ)
    if shutil.which("man"):  # Documentation=man:pinsyncd(1) must resolve: the page is there
        (tmp_path / "man" / "man1").mkdir(parents=True)
        shutil.copy(ROOT / "man" / "pinsyncd.1", tmp_path / "man" / "man1" / "pinsyncd.1")
        env["MANPATH"] = str(tmp_path / "man")
        man = []
    else:
        man = ["--man=no"]
    result = subprocess.run(
        ["systemd-analyze", "verify", *man, DAEMON.name, ONE_CYCLE.name, TIMER.name, SERVE.name],
        cwd=units,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_unit_runs_the_daemon_with_the_documented_settings() -> None:
    for line in (
        f"ExecStart={EXECUTABLE} run -c /etc/pinsyncd/config.yaml",
        "RestartPreventExitStatus=78",
        "StateDirectory=pinsyncd",
        "DynamicUser=yes",
        "User=pinsyncd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert line in lines(DAEMON)


def test_timer_service_runs_one_cycle_as_the_daemons_user_with_its_hardening() -> None:
    settings = lines(ONE_CYCLE)
    assert "Type=oneshot" in settings
    assert f"ExecStart={EXECUTABLE} sync --once -c /etc/pinsyncd/config.yaml" in settings
    # The same user (so the same state and control socket), the same confinement.
    assert service_settings(ONE_CYCLE) == service_settings(DAEMON)
    assert "[Install]" not in settings  # started by the timer, never enabled itself


def test_serve_unit_runs_serve_as_the_daemons_user_with_its_hardening() -> None:
    settings = lines(SERVE)
    for line in (
        f"ExecStart={EXECUTABLE} serve -c /etc/pinsyncd/config.yaml",
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
        "WantedBy=multi-user.target",
    ):
        assert line in settings
    assert service_settings(SERVE) == service_settings(DAEMON)


def test_timer_starts_the_one_cycle_service_every_15_minutes() -> None:
    settings = lines(TIMER)
    assert TIMER.stem == ONE_CYCLE.stem  # a timer starts the service of its own name
    for line in (
        "OnCalendar=*:0/15",
        "Persistent=true",
        "RandomizedDelaySec=3min",
        "WantedBy=timers.target",
    ):
        assert line in settings


def test_source_tree_links_to_the_packaged_files() -> None:
    """One copy of each: the places the README names are links into the package."""
    assert (ROOT / "systemd").is_symlink()
    assert (ROOT / "systemd").resolve() == UNITS.resolve()
    assert (ROOT / "config.example.yaml").is_symlink()
    assert (ROOT / "config.example.yaml").resolve() == UNITS.parent / "config.example.yaml"
