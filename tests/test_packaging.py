"""pinsyncd as users install it. The sdist and the wheel are built (`python -m build`, the
wheel from the sdist) from a copy of the source tree, pass `twine check --strict`, and hold
what they must; the wheel is installed into a fresh venv on each Python the classifiers
claim, where the real `pinsyncd` command runs. The venv gets its dependencies from the
package index, as `pip install pinsyncd` does."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a build and a venv per Python

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
(BUILD_REQUIRES,) = PYPROJECT["build-system"]["requires"]
VERSION = PROJECT["version"]
CLAIMED = [
    c.rsplit(" :: ", 1)[1]
    for c in PROJECT["classifiers"]
    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
]
UNITS = [
    "pinsyncd-serve.service",
    "pinsyncd-sync.service",
    "pinsyncd-sync.timer",
    "pinsyncd.service",
]
PACKAGED = ["pinsyncd/data/config.example.yaml", *(f"pinsyncd/data/systemd/{u}" for u in UNITS)]
NOT_INHERITED = (
    "PYTHON", "PINSYNCD_", "VIRTUAL_ENV", "XDG_", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY",
    "JOURNAL_STREAM", "NOTIFY_SOCKET", "IPFS_PATH",
)  # fmt: skip
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".peers", "node_modules", "__pycache__", ".*_cache", ".hypothesis",
    "build", "dist", "*.egg-info",
)  # fmt: skip


def run(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr}"
    return result


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path


def inherited_env() -> dict[str, str]:
    """This process's environment (the index, proxy and certificates pip needs) without what
    could make a child import the source tree (PYTHONPATH) or find a config or a state."""
    return {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}


def build(
    tmp: Path, *options: str, setuptools: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m build` into tmp/dist, on a copy of the source tree (a build writes
    egg-info and build/ beside its sources), with `setuptools` (e.g. "==76.1.0") in place of
    the build requirement when given. Its exit code is the caller's to check."""
    source = tmp / "pinsyncd"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_COPIED)
    if setuptools is not None:
        pyproject = source / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8")
        pyproject.write_text(text.replace(f'"{BUILD_REQUIRES}"', f'"setuptools{setuptools}"'))
    command = [sys.executable, "-m", "build", *options, "--outdir", str(tmp / "dist"), str(source)]
    return subprocess.run(command, capture_output=True, text=True, env=inherited_env(), timeout=600)


def built(tmp: Path, *options: str, setuptools: str | None = None) -> Path:
    """The directory of the dists that `build` made; a failed build fails the test."""
    result = build(tmp, *options, setuptools=setuptools)
    assert result.returncode == 0, f"the build failed:\n{result.stdout}\n{result.stderr}"
    return tmp / "dist"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = built(tmp_path_factory.mktemp("build"))
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dists(wheel, sdist)


def test_build_requirement_is_the_oldest_setuptools_that_builds(tmp_path: Path) -> None:
    """77.0.1, the oldest setuptools 77 on the index (there is no 77.0.0), builds the wheel;
    76.1.0, the newest before it, refuses `license = "MIT"`."""
    (wheel,) = built(tmp_path / "77", "--wheel", setuptools="==77.0.1").glob("*.whl")
    with zipfile.ZipFile(wheel) as dist:
        generator = dist.read(f"pinsyncd-{VERSION}.dist-info/WHEEL").decode().splitlines()
        metadata = dist.read(f"pinsyncd-{VERSION}.dist-info/METADATA").decode().splitlines()
    assert "Generator: setuptools (77.0.1)" in generator
    assert "License-Expression: MIT" in metadata
    refused = build(tmp_path / "76", "--wheel", setuptools="==76.1.0")
    assert refused.returncode != 0
    assert "invalid pyproject.toml config: `project.license`" in refused.stdout + refused.stderr


def test_both_dists_pass_twine_check_strict(dists: Dists) -> None:
    twine = [sys.executable, "-m", "twine", "check", "--strict"]
    result = run([*twine, str(dists.sdist), str(dists.wheel)], inherited_env())
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_sdist_holds_the_sources_docs_and_license_without_links(dists: Dists) -> None:
    top = f"pinsyncd-{VERSION}/"
    with tarfile.open(dists.sdist) as sdist:
        members = {m.name.removeprefix(top): m for m in sdist.getmembers()}
        metadata = sdist.extractfile(top + "PKG-INFO").read().decode()
    for name in ("LICENSE", "README.md", "CHANGELOG.md", "docs/design.md", "man/pinsyncd.1"):
        assert name in members
    for name in PACKAGED:
        assert members[name].isfile(), name
    assert [n for n, m in members.items() if m.issym() or m.islnk()] == []
    assert [n for n in members if n.startswith("tests/")] == []  # they need the repository
    assert "License-Expression: MIT" in metadata.splitlines()


def test_wheel_holds_the_package_data_man_page_and_license(dists: Dists) -> None:
    info = f"pinsyncd-{VERSION}.dist-info"
    with zipfile.ZipFile(dists.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"{info}/METADATA").decode().splitlines()
    for name in PACKAGED:
        assert name in names
    assert f"pinsyncd-{VERSION}.data/data/share/man/man1/pinsyncd.1" in names
    assert f"{info}/licenses/LICENSE" in names
    assert {n.split("/")[0] for n in names} == {"pinsyncd", info, f"pinsyncd-{VERSION}.data"}
    assert "License-Expression: MIT" in metadata
    assert f"Requires-Python: {PROJECT['requires-python']}" in metadata
    assert "Project-URL: Source, https://github.com/pinsyncd/pinsyncd" in metadata


def find_python(version: str) -> str | None:
    """An interpreter of this version: on PATH, or one pyenv built."""
    pyenv = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates = [shutil.which(f"python{version}") or ""]
    candidates += sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@dataclass(frozen=True)
class Installed:
    venv: Path
    env: dict[str, str]

    def pinsyncd(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Its output; a failure fails the test with its stderr."""
        command = [str(self.venv / "bin" / "pinsyncd"), *args]
        return run(command, env=env or self.env, cwd=self.venv).stdout

    def python(self, code: str) -> str:
        """Run outside the source tree: `python -c` imports from its working directory."""
        return run([str(self.venv / "bin" / "python"), "-c", code], self.env, self.venv).stdout


@pytest.fixture(scope="module", params=CLAIMED)
def installed(
    request: pytest.FixtureRequest, dists: Dists, tmp_path_factory: pytest.TempPathFactory
) -> Installed:
    """The wheel in a fresh venv of one claimed Python. pip keeps this process's settings
    (index, proxy, certificates, cache); pinsyncd then runs with a HOME of its own and
    nothing that could make it import the source tree (PYTHONPATH) or find a config."""
    python = find_python(request.param)
    if python is None:
        pytest.skip(f"no Python {request.param} on this machine (claimed in the classifiers)")
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    venv = home / "venv"
    env = inherited_env()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    run([python, "-m", "venv", str(venv)], env, home)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", str(dists.wheel)], env, home)
    env["HOME"] = str(home)
    return Installed(venv, env)


def test_installed_command_runs_from_the_wheel(installed: Installed) -> None:
    assert installed.pinsyncd("--version") == f"pinsyncd {VERSION}\n"
    assert "check-config" in installed.pinsyncd("--help")
    # The package, not a source tree, is what runs.
    where = installed.python("import pinsyncd; print(pinsyncd.__file__)")
    assert where.startswith(str(installed.venv)), where


def test_installed_example_config_checks(installed: Installed, tmp_path: Path) -> None:
    example = tmp_path / "config.yaml"
    example.write_text(
        installed.python(
            "import sys; from pinsyncd.data import example_config as e; sys.stdout.write(e())"
        )
    )
    assert example.read_text() == (ROOT / "config.example.yaml").read_text()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "filebase").write_text("a-token\n")
    (credentials / "filebase").chmod(0o600)
    env = {**installed.env, "PINATA_TOKEN": "p", "CREDENTIALS_DIRECTORY": str(credentials)}
    checked = installed.pinsyncd("check-config", "-c", str(example), env=env)
    assert checked.startswith(f"{example}: OK\n"), checked


def test_installed_units_and_man_page(installed: Installed) -> None:
    units = installed.python(
        "from importlib.resources import files\n"
        "print(*sorted(p.name for p in (files('pinsyncd.data') / 'systemd').iterdir()"
        " if p.is_file()))"
    )
    assert units.split() == UNITS
    page = installed.venv / "share" / "man" / "man1" / "pinsyncd.1"
    assert page.read_text() == (ROOT / "man" / "pinsyncd.1").read_text()


def test_installed_init_writes_a_config_that_checks(installed: Installed, tmp_path: Path) -> None:
    """`init` from a Kubo repo that knows one pinning service (its config file alone: no node
    runs, none is asked), then `check-config` on what it wrote."""
    repo = tmp_path / "ipfs"
    repo.mkdir()
    kubo_config = {
        "Addresses": {"API": "/ip4/127.0.0.1/tcp/5001"},
        "Pinning": {
            "RemoteServices": {
                "pinata": {"API": {"Endpoint": "https://api.pinata.cloud/psa", "Key": "k-123"}}
            }
        },
    }
    (repo / "config").write_text(json.dumps(kubo_config))
    config = tmp_path / "pinsyncd" / "config.yaml"
    installed.pinsyncd("init", "--output", str(config), "--ipfs-path", str(repo))
    token = config.parent / "tokens" / "pinata"
    assert token.read_text().strip() == "k-123"
    assert token.stat().st_mode & 0o777 == 0o600
    assert "k-123" not in config.read_text()
    checked = installed.pinsyncd("check-config", "-c", str(config))
    assert checked.startswith(f"{config}: OK\n"), checked
    assert "service  pinata: https://api.pinata.cloud/psa" in checked
