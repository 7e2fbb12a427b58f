"""The shipped unit file is valid for systemd (checked with `systemd-analyze verify`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "pinsyncd.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_file_verifies(tmp_path: Path) -> None:
    fake = tmp_path / "pinsyncd"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    unit = tmp_path / "pinsyncd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/pinsyncd", str(fake)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_unit_runs_the_daemon_with_the_documented_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "ExecStart=/usr/local/bin/pinsyncd run -c /etc/pinsyncd/config.yaml",
        "RestartPreventExitStatus=78",
        "StateDirectory=pinsyncd",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert line in text.splitlines()
