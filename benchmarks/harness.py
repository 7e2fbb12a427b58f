"""What every benchmark shares: the peers as subprocesses on 127.0.0.1 (our servers, the npm
mock, real Kubo), pinsyncd run as a subprocess with its CPU and peak RSS taken from the kernel
(`wait4`), the config file, and the output: a table for people and one JSON line for tools."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from benchmarks.servers import TOKEN

if TYPE_CHECKING:
    from pinsyncd.sync.engine import SyncEngine
    from pinsyncd.tuning import Tuning

ROOT = Path(__file__).resolve().parent.parent
IPFS_BIN = ROOT / ".peers" / "bin" / "ipfs"
TOKEN_ENV = "PINSYNCD_BENCH_TOKEN"
SERVICE = "bench"


# --- output -----------------------------------------------------------------------------------


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [
        all(_is_number(row[i]) for row in rows) if rows else False for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [title, line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def sizes_from_args(doc: str | None, default: str = "100000,1000000") -> tuple[list[int], bool]:
    """`--pins N,M` (default `default`) and `--quick` (2,000 pins, for the smoke test):
    the sizes to measure and whether the run is quick."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--pins", default=default)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    return ([2000] if args.quick else [int(n) for n in args.pins.split(",")]), args.quick


def emit(benchmark: str, quick: bool, results: dict[str, Any]) -> dict[str, Any]:
    """Print the JSON line (always the last line of the output) and return it."""
    record = {"benchmark": benchmark, "quick": quick, **machine(), **results}
    print(json.dumps(record, sort_keys=False), flush=True)
    return record


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load": round(os.getloadavg()[0], 2),
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if a and b else None


# --- subprocess peers ---------------------------------------------------------------------------


def _read_json_line(process: subprocess.Popen[bytes], timeout: float, what: str) -> dict[str, Any]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(process.stdout.fileno(), 4096)
        except BlockingIOError:
            chunk = None
        if chunk:
            buffer += chunk
            if b"\n" in buffer:
                return json.loads(buffer.split(b"\n", 1)[0])
        elif chunk == b"" or process.poll() is not None:
            break
        time.sleep(0.02)
    stop_process(process)
    raise RuntimeError(f"{what} did not start: {buffer.decode(errors='replace')[-500:]}")


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only this process, by its PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 600) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


@dataclass
class PeerStats:
    """Requests a Pinning Service served, by operation, and the local RPC calls."""

    psa: dict[str, int]
    add_span: float
    pins: int
    cpu: float
    kubo: dict[str, int] = field(default_factory=dict)
    last_add_at: float | None = None
    """When the last add arrived (time.monotonic(), which is system-wide on Linux)."""

    @property
    def total(self) -> int:
        return sum(self.psa.values())

    def __sub__(self, other: PeerStats) -> PeerStats:
        return PeerStats(
            {k: v - other.psa.get(k, 0) for k, v in self.psa.items()},
            self.add_span,
            self.pins,
            self.cpu - other.cpu,
            {k: v - other.kubo.get(k, 0) for k, v in self.kubo.items()},
        )


def _stats(data: dict[str, Any]) -> PeerStats:
    return PeerStats(
        psa=dict(data["psa"]),
        add_span=float(data["psa_add_span"]),
        pins=int(data["psa_pins"]),
        cpu=float(data["cpu"]),
        kubo=dict(data.get("kubo", {})),
        last_add_at=data.get("psa_last_add_at"),
    )


class _PeerProcess:
    """A peer in a subprocess that prints one JSON line (its ports) once it listens, and is
    stopped when the `with` block ends."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self, args: Sequence[str], timeout: float, what: str) -> dict[str, Any]:
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE)
        return _read_json_line(self.process, timeout, what)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


class BenchServers(_PeerProcess):
    """`python -m benchmarks.servers` as a subprocess: FakeKubo + FakePinningService."""

    def __init__(
        self,
        *,
        kubo_pins: int = 0,
        psa_pins: int = 0,
        psa_status: str | None = None,
        transition_after: float | None = None,
        count_mode: str = "total",
        latency: float = 0.0,
        seed: str = "bench",
        start_timeout: float = 600.0,
    ) -> None:
        self.args = [
            "--kubo-pins",
            str(kubo_pins),
            "--psa-pins",
            str(psa_pins),
            "--seed",
            seed,
            "--count-mode",
            count_mode,
        ]
        if psa_status:
            self.args += ["--psa-status", psa_status]
        if latency:
            self.args += ["--latency", str(latency)]
        if transition_after is not None:
            self.args += ["--transition-after", str(transition_after)]
        super().__init__()
        self.seed = seed
        self.start_timeout = start_timeout
        self.ports: dict[str, int] = {}

    def __enter__(self) -> Self:
        args = [sys.executable, "-m", "benchmarks.servers", *self.args]
        self.ports = self._start(args, self.start_timeout, "benchmarks.servers")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def kubo_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['kubo']}"

    @property
    def psa_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['psa']}"

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    def stats(self) -> PeerStats:
        return _stats(_http_json(f"{self.control}/stats"))

    def reset(self) -> None:
        _http_json(f"{self.control}/reset", {})

    def seed_psa(self, count: int, *, start: int = 0, status: str | None = None) -> None:
        body = {"count": count, "start": start, "seed": self.seed, "status": status}
        _http_json(f"{self.control}/psa/seed", body)

    def force_psa(self, status: str) -> None:
        _http_json(f"{self.control}/psa/force", {"status": status})

    def set_kubo(self, pins: int) -> None:
        _http_json(f"{self.control}/kubo", {"pins": pins})


class NpmMock(_PeerProcess):
    """The npm mock-ipfs-pinning-service through peers/npm/mock-psa.js, with its request
    counters on (`--count`)."""

    def __init__(self) -> None:
        super().__init__()
        self.url = ""

    def __enter__(self) -> Self:
        script = ROOT / "peers" / "npm" / "mock-psa.js"
        args = ["node", str(script), "--port", "0", "--token", TOKEN, "--count"]
        self.url = f"http://127.0.0.1:{self._start(args, 30, 'npm mock')['port']}"
        return self

    @property
    def psa_url(self) -> str:
        return self.url

    def stats(self) -> PeerStats:
        return _stats(_http_json(f"{self.url}/__bench/stats"))

    def reset(self) -> None:
        _http_json(f"{self.url}/__bench/reset", {})


# --- pinsyncd as a subprocess -------------------------------------------------------------------


@dataclass
class ProcessRun:
    """One finished process: exit code, wall and CPU seconds (wait4), peak RSS (VmHWM)."""

    returncode: int
    wall: float
    user: float
    system: float
    max_rss_mb: float
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines pinsyncd wrote (`--log-format json` goes to stderr)."""
        found = []
        for line in (self.stderr + "\n" + self.stdout).splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def check(self, what: str) -> Self:
        if self.returncode != 0:
            raise RuntimeError(
                f"{what} exited {self.returncode}: {self.stderr[-2000:]}{self.stdout[-500:]}"
            )
        return self


def run_measured(
    argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 3600
) -> ProcessRun:
    """Run a process to its end. CPU seconds are the kernel's (wait4 rusage). Peak RSS is
    VmHWM from /proc, read every few milliseconds while it runs: rusage's ru_maxrss is no
    use here, since Linux carries the parent's RSS at fork into the child's maximum."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=ROOT)
        deadline = started + timeout
        peak = 0.0
        while True:
            with contextlib.suppress(OSError):
                peak = max(peak, process_rss_mb(process.pid)[1])
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.003)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ProcessRun(
            returncode=process.returncode,
            wall=wall,
            user=usage.ru_utime,
            system=usage.ru_stime,
            max_rss_mb=peak,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def pinsyncd_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINSYNCD_")}
    env[TOKEN_ENV] = TOKEN
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_pinsyncd(
    args: Sequence[str], config: Path, *, log_level: str = "info", timeout: float = 3600
) -> ProcessRun:
    argv = [sys.executable, "-m", "pinsyncd", *args, "-c", str(config)]
    argv += ["--log-format", "json", "--log-level", log_level]
    return run_measured(argv, env=pinsyncd_env(), timeout=timeout)


def write_config(
    directory: Path,
    *,
    node_api: str,
    endpoint: str,
    concurrency: int = 8,
    interval: str | None = "1h",
    status_interval: str | None = "500ms",
    verify_interval: str = "1d",
    timeout: str = "30s",
    state: Path | None = None,
) -> Path:
    """A pinsyncd config with one service named `bench`; the token comes from TOKEN_ENV.
    An interval given as None is left to its default."""
    path = directory / "config.yaml"
    state_path = state or directory / "state.db"
    path.write_text(
        "\n".join(
            [
                "node:",
                f"  api: {node_api}",
                "  timeout: 60s",
                "sync:",
                *([f"  interval: {interval}"] if interval else []),
                *([f"  status_interval: {status_interval}"] if status_interval else []),
                f"  verify_interval: {verify_interval}",
                "  origins: all",
                "state:",
                f"  path: {state_path}",
                "services:",
                f"  - name: {SERVICE}",
                f"    endpoint: {endpoint}",
                f"    token_env: {TOKEN_ENV}",
                f"    concurrency: {concurrency}",
                f"    timeout: {timeout}",
                "",
            ]
        )
    )
    return path


def cycle_events(run: ProcessRun) -> list[dict[str, Any]]:
    """The `cycle done` lines of a `pinsyncd sync` run (log level debug shows idle ones)."""
    return [e for e in run.events() if e.get("event") == "cycle done"]


# --- real Kubo ----------------------------------------------------------------------------------


@contextmanager
def kubo_daemon(repo: Path, *, online: bool = False) -> Iterator[Any]:
    """Real Kubo (`.peers/bin/ipfs`, built by scripts/install-peers) on loopback."""
    from tests.peers import KuboNode

    node = KuboNode(repo, online=online)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def process_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a live process in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# --- pinsyncd in this process (where its CPU must be counted on its own) -----------------------


@asynccontextmanager
async def engine_for(config_path: Path, tuning: Tuning | None = None) -> AsyncIterator[SyncEngine]:
    """The real SyncEngine on a config file; the peers must run in another process, so that
    `time.process_time()` around `engine.cycle()` is pinsyncd's CPU only (its SQLite thread
    included)."""
    from pinsyncd.config import load_config
    from pinsyncd.logs import configure_logging
    from pinsyncd.store import StateStore
    from pinsyncd.sync.engine import SyncEngine

    configure_logging(level="warning", json=True)
    os.environ[TOKEN_ENV] = TOKEN
    config = load_config(config_path)
    store = await StateStore.open(config.state_path)
    engine = SyncEngine(config, store, **({"tuning": tuning} if tuning else {}))
    try:
        yield engine
    finally:
        await engine.close()
        await store.close()
