"""The judge: runs the IPFS Pinning Service API compliance suite
(`@ipfs-shipyard/pinning-service-compliance`, installed into peers/compliance by
scripts/install-peers) against a server on 127.0.0.1, and reads back every check and every
expectation it judged.

The suite runs as `node --import peers/compliance/preload.mjs <suite> -s ENDPOINT TOKEN`. The
preload keeps it on this machine (it answers the one spec URL the suite fetches from
tests/spec/ipfs-pinning-service.yaml and refuses any connection off loopback), sends its report
files into a temporary folder, and writes each API call it judged as a JSON line; this module
turns those lines into a `ComplianceReport`.

Words, as the suite uses them: a *check* is an API call the suite starts on its own (what its
report's summary lists, e.g. "Request with invalid token"); it may have child calls (e.g. one
per text-matching strategy); every call has *expectations* ("Response code is 401"). A check
passes when every expectation of it and of its children passes.

Titles carry the run's random data (CIDs, names, requestids, dates). `stable_title` replaces
them with placeholders, so a test can name a check or an expectation across runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITE_DIR = ROOT / "peers" / "compliance"
SUITE_MAIN = (
    SUITE_DIR / "node_modules" / "@ipfs-shipyard" / "pinning-service-compliance" / "dist" / "src"
) / "index.js"
PRELOAD = SUITE_DIR / "preload.mjs"
SPEC = ROOT / "tests" / "spec" / "ipfs-pinning-service.yaml"
REFUSED_EXIT = 86
"""preload.mjs's exit code when the suite tried to connect off this machine."""

_STABLE_TITLES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^Pins post of CID '.*'$", "Pins post of CID '<cid>'"),
        (r"^Can create a pin with name='.*'$", "Can create a pin with name='<name>'"),
        (
            r"^Can retrieve pin with name '.*' via the '(\w+)' TextMatchingStrategy$",
            r"Can retrieve pin with name '<name>' via the '\1' TextMatchingStrategy",
        ),
        (r"^Could obtain requestid from new pin \(.*\)$", "Could obtain requestid from new pin"),
        (
            r"^Pin's with requestid '.*' can have cid '.*' replaced with '.*'$",
            "Pin's with requestid '<requestid>' can have cid '<cid>' replaced with '<cid>'",
        ),
        (
            r"^Can create new pin for testing pagination cid='.*'$",
            "Can create new pin for testing pagination cid='<cid>'",
        ),
        (r"^Can delete pin with requestid '.*'$", "Can delete pin with requestid '<requestid>'"),
        (r"^Get all Pins created before '.*'$", "Get all Pins created before '<date>'"),
        (
            r"^Final pinsGet call returns the same count as before all compliance checks: '.*'$",
            "Final pinsGet call returns the same count as before all compliance checks",
        ),
    )
]


def stable_title(title: str) -> str:
    """A title without the run's random data (see the module's docstring)."""
    for pattern, replacement in _STABLE_TITLES:
        if pattern.match(title):
            return pattern.sub(replacement, title)
    return title


class ComplianceRunError(RuntimeError):
    """The suite did not run to its end, or tried to leave this machine."""


@dataclass(frozen=True)
class Expectation:
    """One expectation of one API call, as the suite judged it."""

    title: str
    passed: bool
    error: str | None
    """The exception the expectation raised, if any (a failure without one is just False)."""

    @property
    def stable_title(self) -> str:
        return stable_title(self.title)


@dataclass(frozen=True)
class ApiCallResult:
    """One API call of a check (the check's own call, or a child of it), with what it saw."""

    id: int
    parent: int | None
    title: str
    passed: bool
    """Its own expectations and all its children's passed (the suite's `successful`)."""
    expectations: tuple[Expectation, ...]
    """Its own expectations only; a child's are in the child's own result."""
    errors: tuple[str, ...]
    """What went wrong around the call itself (e.g. the client could not parse an answer)."""
    schema_errors: tuple[str, ...]
    """Why the answer did not match the spec's schema, when that expectation failed."""
    failure: str | None
    """The error the call itself ended with, if it did not return a result."""
    status: int | None
    body: str | None
    """The answer's body (its first 4000 characters)."""

    @property
    def stable_title(self) -> str:
        return stable_title(self.title)


@dataclass(frozen=True)
class ExpectationOutcome:
    """An expectation with where it belongs: `path` is "check > call > expectation" (the call
    left out when it is the check's own), in stable titles."""

    check: str
    call: str
    expectation: Expectation

    @property
    def path(self) -> str:
        parts = [self.check] if self.check == self.call else [self.check, self.call]
        return " > ".join([*parts, self.expectation.stable_title])


@dataclass(frozen=True)
class Check:
    """A check: the API call the suite starts on its own, and its children, depth first."""

    calls: tuple[ApiCallResult, ...]

    @property
    def root(self) -> ApiCallResult:
        return self.calls[0]

    @property
    def title(self) -> str:
        return self.root.title

    @property
    def stable_title(self) -> str:
        return self.root.stable_title

    @property
    def passed(self) -> bool:
        return self.root.passed

    def outcomes(self) -> Iterator[ExpectationOutcome]:
        for call in self.calls:
            for expectation in call.expectations:
                yield ExpectationOutcome(self.stable_title, call.stable_title, expectation)


@dataclass
class ComplianceReport:
    """Everything one run of the suite judged, and its raw output for failure messages."""

    endpoint: str
    checks: list[Check]
    summary: dict[str, int]
    """The suite's own totals: checks, passed, failed, expectations, api_calls, refused."""
    returncode: int
    stdout: str
    """The suite's console report (each call, ✓/✗ per expectation, a summary)."""
    stderr: str
    markdown: str
    """The suite's markdown report: every request and answer in full."""
    seconds: float
    calls: list[ApiCallResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def outcomes(self) -> list[ExpectationOutcome]:
        return [outcome for check in self.checks for outcome in check.outcomes()]

    @property
    def failing_checks(self) -> set[str]:
        """The stable titles of the checks that failed."""
        return {check.stable_title for check in self.checks if not check.passed}

    @property
    def failing_expectations(self) -> set[str]:
        """The paths (`ExpectationOutcome.path`) of every expectation that failed."""
        return {o.path for o in self.outcomes() if not o.expectation.passed}

    @property
    def complete(self) -> bool:
        """Whether every check and expectation the suite counted was read back here."""
        return (
            self.summary.get("checks") == len(self.checks)
            and self.summary.get("expectations") == len(self.outcomes())
            and self.summary.get("api_calls") == len(self.calls)
        )

    def explain(self) -> str:
        """The failures with what the server answered, for an assertion message."""
        lines = [f"compliance of {self.endpoint}: {self.summary}"]
        for check in self.checks:
            for call in check.calls:
                failed = [e for e in call.expectations if not e.passed]
                if not failed:
                    continue
                lines.append(f"- {call.title} (HTTP {call.status})")
                lines += [f"    ✗ {e.title}" + (f": {e.error}" if e.error else "") for e in failed]
                lines += [f"    schema: {message}" for message in call.schema_errors]
                lines += [f"    error: {message}" for message in call.errors]
                if failed and call.body:
                    lines.append(f"    body: {call.body[:500]}")
        return "\n".join(lines)


def _checks(calls: list[ApiCallResult]) -> list[Check]:
    children: dict[int | None, list[ApiCallResult]] = {}
    for call in sorted(calls, key=lambda c: c.id):
        children.setdefault(call.parent, []).append(call)

    def subtree(call: ApiCallResult) -> Iterator[ApiCallResult]:
        yield call
        for child in children.get(call.id, []):
            yield from subtree(child)

    return [Check(tuple(subtree(root))) for root in children.get(None, [])]


def _call(record: dict[str, Any]) -> ApiCallResult:
    return ApiCallResult(
        id=int(record["id"]),
        parent=None if record["parent"] is None else int(record["parent"]),
        title=str(record["title"]),
        passed=bool(record["successful"]),
        expectations=tuple(
            Expectation(str(e["title"]), bool(e["success"]), e["error"])
            for e in record["expectations"]
        ),
        errors=tuple(f"{e['title']}: {e['error']}" for e in record["errors"]),
        schema_errors=tuple(str(m) for m in record["schema_errors"]),
        failure=record["failure"],
        status=record["status"],
        body=record["body"],
    )


def parse_results(text: str) -> tuple[list[ApiCallResult], dict[str, int] | None]:
    """The API calls and the summary from preload.mjs's JSON lines."""
    calls: list[ApiCallResult] = []
    summary: dict[str, int] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record["kind"] == "call":
            calls.append(_call(record))
        elif record["kind"] == "summary":
            summary = {k: int(v) for k, v in record.items() if k != "kind"}
    return calls, summary


def suite_installed() -> bool:
    return SUITE_MAIN.exists()


def node_command(endpoint: str, token: str) -> list[str]:
    """The command line that runs the suite, with the preload, against one server."""
    node = shutil.which("node")
    if node is None:
        raise ComplianceRunError("node is not installed (the compliance suite is Node.js)")
    return [node, "--import", PRELOAD.as_uri(), str(SUITE_MAIN), "-s", endpoint, token]


def suite_environment(out: Path) -> dict[str, str]:
    """The suite's environment: the preload's files, no colours, nothing of npm's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("npm_", "NODE_"))}
    env.update(
        COMPLIANCE_SPEC=str(SPEC),
        COMPLIANCE_RESULTS=str(out / "results.jsonl"),
        COMPLIANCE_REPORTS=str(out / "reports"),
        NO_COLOR="1",
        FORCE_COLOR="0",
    )
    return env


def run_compliance(endpoint: str, token: str, *, timeout: float) -> ComplianceReport:
    """Run the whole suite against `endpoint` (a Pinning Service API on loopback) with
    `token`, and return what it judged. It throttles itself to a request a second, so a run
    takes a minute or two. Raises `ComplianceRunError` when it did not finish (timeout, crash)
    or tried to connect anywhere but this machine; failed checks are the report's business."""
    if not suite_installed():
        raise ComplianceRunError(f"{SUITE_MAIN} is missing: run scripts/install-peers")
    with tempfile.TemporaryDirectory(prefix="compliance-") as scratch:
        out = Path(scratch)
        (out / "reports").mkdir()
        started = time.monotonic()
        try:
            result = subprocess.run(
                node_command(endpoint, token),
                cwd=out,  # the suite asks `git` for the revision of the folder it runs in
                env=suite_environment(out),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise ComplianceRunError(
                f"the compliance suite did not finish in {timeout}s against {endpoint}:\n"
                f"{_text(error.stdout)[-3000:]}\n{_text(error.stderr)[-3000:]}"
            ) from error
        seconds = time.monotonic() - started
        results = out / "results.jsonl"
        calls, summary = parse_results(results.read_text() if results.exists() else "")
        markdown = "".join(p.read_text() for p in sorted((out / "reports").glob("*.md")))
        report = ComplianceReport(
            endpoint=endpoint,
            checks=_checks(calls),
            summary=summary or {},
            returncode=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
            markdown=markdown,
            seconds=seconds,
            calls=calls,
        )
    if result.returncode == REFUSED_EXIT or report.summary.get("refused"):
        raise ComplianceRunError(
            f"the compliance suite tried to leave this machine:\n{result.stderr}"
        )
    if result.returncode != 0 or summary is None:
        raise ComplianceRunError(
            f"the compliance suite failed (exit {result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return report


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output
