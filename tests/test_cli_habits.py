"""The CLI habits a user brings from `ipfs`, `restic` and `borgmatic`: global options before
or after the command, `-q`/`-v`, `--json` on the commands that print results, and shell
completion that a real `bash -i` loads and uses. Through the real CLI as a subprocess."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pinsyncd.control import socket_path
from tests.daemon_helpers import ServiceSpec, acli, start_daemon, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService

pytestmark = pytest.mark.slow  # the CLI as a subprocess, several times a test

TOKEN = "habits-token"


async def test_global_options_go_before_or_after_the_command(tmp_path: Path) -> None:
    async with (
        FakeKubo(pins=5) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("alpha", svc.url, TOKEN)]
        )
        code, _out, err = await acli(["-c", str(config), "sync", "--once", "--wait"], env)
        assert code == 0, err
        before = await acli(["-c", str(config), "status", "--json"], env)
        after = await acli(["status", "--json", "-c", str(config)], env)
        assert before[0] == after[0] == 0
        assert json.loads(before[1])["services"] == json.loads(after[1])["services"]
        # Given after the command, an option wins over the same one before it.
        code, _out, err = await acli(["-c", "/nowhere.yaml", "status", "-c", str(config)], env)
        assert code == 0, err

        code, _out, err = await acli(["-q", "-c", str(config), "sync", "--once"], env)
        assert code == 0 and '"level": "info"' not in err, err
        code, _out, err = await acli(["sync", "--once", "-v", "-c", str(config)], env)
        assert code == 0 and '"level": "debug"' in err, err


async def test_json_results_from_sync_and_its_dry_run_alone_and_beside_the_daemon(
    tmp_path: Path,
) -> None:
    async with (
        FakeKubo(pins=5) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("alpha", svc.url, TOKEN)]
        )
        code, out, err = await acli(["sync", "--dry-run", "--json", "-c", str(config)], env)
        assert code == 0, err
        plan = json.loads(out)["services"]["alpha"]
        assert plan["first_contact"] and plan["adds"] == 0, "adds wait for first contact"

        code, out, err = await acli(["sync", "--once", "--wait", "--json", "-c", str(config)], env)
        doc = json.loads(out)
        assert (code, doc["exit_code"], doc["problems"]) == (0, 0, []), err
        assert doc["services"]["alpha"]["added"] == 5

        daemon = await start_daemon(config, env, tmp_path / "daemon.log")
        try:
            for _ in range(100):
                if socket_path(tmp_path / "state.db").exists():
                    break
                await asyncio.sleep(0.1)
            code, out, err = await acli(["sync", "--once", "--json", "-c", str(config)], env)
            assert code == 0, err
            assert "it does the sync now" in err
            assert json.loads(out)["exit_code"] == 0
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.wait(), 30)


def _completion(shell: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pinsyncd", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def _bash_complete(script: Path, *words: str) -> list[str]:
    """What a real interactive bash offers for the last of `words` (TAB)."""
    line = " ".join(words)
    program = (
        f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; '
        f'_shtab_pinsyncd pinsyncd "{words[-1]}" "{words[-2]}"; printf "%s\\n" "${{COMPREPLY[@]}}"'
    )
    result = subprocess.run(
        ["bash", "-i", "-c", program], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower() and "not found" not in result.stderr, result.stderr
    return result.stdout.split()


def test_completion_scripts_load_in_a_real_bash_and_complete(tmp_path: Path) -> None:
    script = tmp_path / "pinsyncd.bash"
    script.write_text(_completion("bash"))
    assert _bash_complete(script, "pinsyncd", "st") == ["status"]
    assert "restore" in _bash_complete(script, "pinsyncd", "re")
    assert _bash_complete(script, "pinsyncd", "ls", "--st") == ["--status"]
    assert "--from-peer" in _bash_complete(script, "pinsyncd", "restore", "--")
    for shell in ("zsh", "fish", "tcsh"):
        text = _completion(shell)
        assert "pinsyncd" in text and "restore" in text, shell
        (tmp_path / f"pinsyncd.{shell}").write_text(text)
    if zsh := shutil.which("zsh"):  # installed as zsh users do: `_pinsyncd` in $fpath
        functions = tmp_path / "zsh-functions"
        functions.mkdir()
        (functions / "_pinsyncd").write_text(_completion("zsh"))
        program = f"fpath=({functions} $fpath); autoload -U compinit; compinit -u; "
        program += "print ${_comps[pinsyncd]}"
        loaded = subprocess.run([zsh, "-c", program], capture_output=True, text=True, timeout=30)
        assert (loaded.stdout.strip(), loaded.stderr) == ("_pinsyncd", ""), loaded
    if tcsh := shutil.which("tcsh"):
        loaded = subprocess.run(
            [tcsh, "-c", f"source {tmp_path / 'pinsyncd.tcsh'}"], capture_output=True, timeout=30
        )
        assert loaded.returncode == 0 and not loaded.stderr, loaded
    if fish := shutil.which("fish"):  # fish can be asked what a TAB offers
        offered = subprocess.run(
            [fish, "-c", f"source {tmp_path / 'pinsyncd.fish'}; complete -C 'pinsyncd ls --st'"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert offered.stdout.startswith("--status\t"), offered
