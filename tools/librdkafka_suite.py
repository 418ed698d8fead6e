"""Run librdkafka's own integration tests against a kvstream broker that this script starts.

librdkafka (the C client inside confluent-kafka) ships a test suite of a few hundred test
programs compiled into one ``test-runner``. Most of them talk to a real broker; this script
points them at kvstream and reports, per test, whether it passed.

What you build first (not done here; this script never builds anything): a librdkafka source
tree of the release your confluent-kafka wraps, or close to it, configured and compiled the
usual way, with the test programs of its ``tests/`` directory compiled too, so that
``tests/test-runner`` exists and the shared libraries it links against sit in ``src/`` and
``src-cpp/`` next to it. The C compiler and the libraries librdkafka's configure asks for
are all it needs; with RapidJSON's headers installed before configuring, the statistics tests
(0053, 0110) run too, else they skip themselves. Java, Kafka's scripts, SSL certificates and a
SASL setup are not needed by the default selection.

Then, from the kvstream checkout, with its virtual environment::

    .venv/bin/python tools/librdkafka_suite.py --tests-dir /path/to/librdkafka/tests
    .venv/bin/python tools/librdkafka_suite.py --tests-dir ... --tests 0011,0030
    .venv/bin/python tools/librdkafka_suite.py --tests-dir ... --list

What it does: starts ``kvstream serve`` on 127.0.0.1 at a free port with a temporary data
directory, 4 partitions per new topic and topic auto-creation (what the suite expects of its
broker); writes the suite's configuration file (the bootstrap address) into that temporary
directory; then runs ``test-runner`` once per test number, in quick mode (``-Q``; ``--full``
runs every sub-test), without the tests that need no broker (``-L``), one test at a time
(``-p1``), with TEST_KAFKA_VERSION 3.9.0 (the suite turns tests and behaviours on by broker
version; 3.9.0 leaves out the ones for Kafka 4.x features kvstream does not serve, such as
share groups), each run stopped after ``--timeout`` seconds. It prints one JSON line per test
(test, result passed / failed / skipped, seconds, and for a failure or skip the last lines it
printed) and a summary line, and exits 1 if any test failed. A test that passes in quick mode
without starting any of its sub-tests (all are long ones, left out) is reported as skipped.

The selection comes from the suite's own test table (``tests/test.c``): every test that needs a
broker, is not marked manual or known-issue, runs in the default scenario and applies to the
Kafka version, minus :data:`LEFT_OUT` (tests that need Kafka's Java tools, SSL or SASL, several
brokers, or features kvstream does not have yet; each with its reason). ``--tests`` picks test
numbers or names instead (left-out tests included when named). ``--list`` prints the selection
and what was left out, and runs nothing. ``--subtests`` narrows a run to the sub-tests whose
name contains a string (to see past a test's first failure); ``--keep`` keeps the broker's data
and log and each run's output in the temporary directory, named in the summary. The runner
writes a statistics file per test into its directory; the script removes those of its run.

OWNS: the selection, the broker process of a run, the suite's environment, and reading the
runner's output. MUST NOT KNOW: how librdkafka is built, or anything of kvstream beyond its
command line. Not run in CI (it needs the C build).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

KAFKA_VERSION = "3.9.0"
DEFAULT_TIMEOUT_S = 600.0
STARTUP_TIMEOUT_S = 30.0
TAIL_LINES = 8

# Tests that need what one kvstream broker cannot give them, by test number: the reason is
# printed by --list. Tests that only skip a part of themselves without these stay selected.
_JAVA = "runs Kafka's Java tools (KAFKA_PATH)"
_TXN = "needs transactions, which kvstream does not have yet"
LEFT_OUT: dict[str, str] = {
    "0052": _JAVA + ": kafka-topics.sh creates its topics",
    "0077": _JAVA + ": kafka-topics.sh creates its compacted topic",
    "0098": _JAVA + ": a Java transactional producer; " + _TXN,
    "0097": "needs SSL listeners and the certificates trivup makes",
    "0101": "needs several brokers in different racks (fetch from follower)",
    "0103": _TXN,
    "0109": _JAVA + ": kafka-acls.sh",
    "0115": _JAVA + ": kafka-acls.sh",
    "0119": _JAVA + ": kafka-acls.sh",
    "0126": "needs SASL/OAUTHBEARER and an OIDC token endpoint",
    "0129": _TXN + " (aborted transactions)",
    "0135": "needs SASL/PLAIN or SASL/SCRAM",
    "0142": "needs SASL",
}

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b\([A-Z0-9]")
_PREFIX = re.compile(r"^\[(?P<test>[^\s/\]]+)\s*/\s*(?P<seconds>-?[\d.]+)s\] (?P<text>.*)$")
_BANNER = re.compile(r"^=+ (?:Running test (?P<running>\S+)|Test (?P<name>\S+) (?P<state>\w+)) =+$")
_FAILURE = re.compile(
    r'^### Test "(?P<test>[^" ]+)(?: \((?P<subtest>[^"]*)\))?" failed at (?P<where>.*)###$'
)
_SKIPPING = "WARN: SKIPPING TEST: "
NOTHING_RAN = "passed without starting a sub-test: quick mode leaves out those not marked quick"


# --------------------------------------------------------------------------------------------
# The suite's test table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestEntry:
    """One ``_TEST(...)`` entry of the suite's tests[] table."""

    name: str
    flags: frozenset[str] = frozenset()
    min_version: tuple[int, ...] | None = None
    max_version: tuple[int, ...] | None = None
    scenario: str | None = None

    @property
    def number(self) -> str:
        return self.name[:4]


def _balanced(text: str, start: int) -> int:
    """Index just past the parenthesis that closes the one at ``text[start]``."""
    depth = 0
    quoted = False
    for i in range(start, len(text)):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i - 1] != "\\":
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced parenthesis at offset {start}")


def _split_args(body: str) -> list[str]:
    """Top-level comma-separated arguments of a macro call's body (nested calls kept whole)."""
    args: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for i, ch in enumerate(body):
        if quoted:
            if ch == '"' and body[i - 1] != "\\":
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        args.append("".join(current).strip())
    return args


def _version(text: str) -> tuple[int, ...] | None:
    m = re.fullmatch(r"TEST_BRKVER\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)", text)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups())


def _strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    return re.sub(r"//[^\n]*", " ", source)


def parse_test_table(source: str) -> list[TestEntry]:
    """The entries of ``struct test tests[] = { ... }`` in the suite's test.c, in order.

    Each entry is ``_TEST(NAME, FLAGS, extra...)`` where the extras may be
    ``TEST_BRKVER(a, b, c, d)`` (the lowest broker version; a second one is the highest),
    ``TEST_BRKVER_TOPIC_ADMINAPI`` (Kafka 0.10.2), ``.scenario = "..."`` and others that do not
    matter here. ``#if`` blocks are read as if their condition held (sockem is built in).
    """
    text = _strip_comments(source)
    table = re.search(r"struct\s+test\s+tests\s*\[\s*\]\s*=\s*\{", text)
    if table is None:
        raise ValueError("no tests[] table in the source")
    entries: list[TestEntry] = []
    for m in re.finditer(r"\b_TEST\s*\(", text[table.end() :]):
        start = table.end() + m.end() - 1
        end = _balanced(text, start)
        args = _split_args(text[start + 1 : end - 1])
        if len(args) < 2 or not re.fullmatch(r"\d{4}_\w+", args[0]):
            continue
        flags = frozenset(f.strip() for f in args[1].split("|") if f.strip() not in ("", "0"))
        versions: list[tuple[int, ...]] = []
        scenario = None
        for extra in args[2:]:
            version = _version(extra)
            if version is not None:
                versions.append(version)
            elif extra == "TEST_BRKVER_TOPIC_ADMINAPI":
                versions.append((0, 10, 2, 0))
            else:
                sm = re.fullmatch(r'\.scenario\s*=\s*"([^"]*)"', extra)
                if sm:
                    scenario = sm.group(1)
        entries.append(
            TestEntry(
                name=args[0],
                flags=flags,
                min_version=versions[0] if versions else None,
                max_version=versions[1] if len(versions) > 1 else None,
                scenario=scenario,
            )
        )
    return entries


def _as_version(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


def select(
    entries: Iterable[TestEntry], kafka_version: str, wanted: Sequence[str] | None = None
) -> tuple[list[TestEntry], list[tuple[TestEntry, str]]]:
    """(selected, left out with the reason). ``wanted``: test numbers or full names; then only
    those are selected, :data:`LEFT_OUT` ones included, the runner's own filters still apply."""
    version = _as_version(kafka_version)
    chosen: list[TestEntry] = []
    left: list[tuple[TestEntry, str]] = []
    for entry in entries:
        reason = None
        if "TEST_F_LOCAL" in entry.flags:
            reason = "needs no broker (a local or mock-cluster test)"
        elif "TEST_F_MANUAL" in entry.flags:
            reason = "a manual test"
        elif "TEST_F_KNOWN_ISSUE" in entry.flags:
            reason = "marked as a known issue in librdkafka"
        elif entry.scenario is not None and "default" not in entry.scenario.split(","):
            reason = f"runs only in the suite's {entry.scenario!r} scenario"
        elif entry.min_version is not None and entry.min_version > version:
            reason = "needs Kafka " + ".".join(map(str, entry.min_version[:3]))
        elif entry.max_version is not None and entry.max_version < version:
            reason = "for Kafka up to " + ".".join(map(str, entry.max_version[:3]))
        elif wanted is None and entry.number in LEFT_OUT:
            reason = LEFT_OUT[entry.number]
        if wanted is not None and entry.number not in wanted and entry.name not in wanted:
            continue
        if reason is None:
            chosen.append(entry)
        else:
            left.append((entry, reason))
    return chosen, left


# --------------------------------------------------------------------------------------------
# The runner's output
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    test: str
    result: str  # passed, failed or skipped
    seconds: float
    lines: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        out: dict[str, object] = {
            "test": self.test,
            "result": self.result,
            "seconds": round(self.seconds, 3),
        }
        if self.lines:
            out["lines"] = self.lines
        return json.dumps(out)


@dataclass
class _Seen:
    started: bool = False
    state: str | None = None  # PASSED, SKIPPED, FAILED (banner), or None
    seconds: float = 0.0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    failures: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    subtests: int = 0  # "[ subtest ]" lines: sub-tests started (or passed, or skipped)


def parse_output(
    text: str,
    tests: Sequence[str],
    *,
    returncode: int | None,
    timeout_s: float | None = None,
    long_subtests_left_out: bool = False,
) -> list[Result]:
    """The outcome of each of ``tests`` (full names) from one test-runner run's output.

    The runner writes everything to stderr, each line as ``[<test> / <seconds>s] text`` in
    colour (lines of a multi-line message after the first carry no prefix). A test passed when
    its ``Test <name> PASSED`` banner appears, was skipped on ``Test <name> SKIPPED`` or on a
    ``SKIPPING TEST:`` warning before it ran, and failed on a ``### Test "<name> (<subtest>)"
    failed at ...`` block. ``long_subtests_left_out``: the run was in quick mode, which leaves
    out the sub-tests not marked quick, and the tests' source has such sub-tests; then a pass
    without a single sub-test started is reported as skipped (:data:`NOTHING_RAN`), as it
    tested next to nothing.
    ``returncode`` None means the run was stopped after ``timeout_s``:
    a test without an outcome then failed. A failure of ``<MAIN>`` alone (e.g. librdkafka
    threads left running at exit) fails the last test that ran.
    """
    seen: dict[str, _Seen] = {name: _Seen() for name in tests}
    main_failures: list[str] = []
    current: str | None = None
    in_failure: list[str] | None = None
    last_ran: str | None = None
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.rstrip()
        if not line:
            continue
        failure = _FAILURE.match(line)
        if failure:
            name = failure.group("test")
            block = [line]
            if name in seen:
                seen[name].failures.extend(block)
                in_failure = seen[name].failures
            elif name == "<MAIN>":
                main_failures.extend(block)
                in_failure = main_failures
            else:
                in_failure = None
            continue
        m = _PREFIX.match(line)
        if m is None:  # continuation of the line before (a failure's message, a long dump)
            if in_failure is not None:
                in_failure.append(line)
            elif current in seen:
                seen[current].tail.append(line)
            continue
        in_failure = None
        current = m.group("test")
        entry = seen.get(current)
        if entry is None:
            continue
        body = m.group("text")
        entry.seconds = max(entry.seconds, float(m.group("seconds")))
        entry.tail.append(body)
        banner = _BANNER.match(body)
        if banner and banner.group("running") == current:
            entry.started = True
            last_ran = current
        elif banner and banner.group("name") == current:
            entry.state = banner.group("state")
        elif body.startswith(_SKIPPING) and entry.skip_reason is None:
            entry.skip_reason = body[len(_SKIPPING) :].strip()
        elif body.startswith("[ "):
            entry.subtests += 1
    if main_failures and last_ran is not None and not seen[last_ran].failures:
        seen[last_ran].failures.extend(main_failures)
    results: list[Result] = []
    for name in tests:
        entry = seen[name]
        if entry.failures:
            results.append(Result(name, "failed", entry.seconds, [*entry.tail, *entry.failures]))
        elif entry.state == "PASSED" and entry.subtests == 0 and long_subtests_left_out:
            results.append(Result(name, "skipped", entry.seconds, [NOTHING_RAN]))
        elif entry.state == "PASSED":
            results.append(Result(name, "passed", entry.seconds))
        elif entry.state == "SKIPPED" or (entry.skip_reason and not entry.started):
            results.append(Result(name, "skipped", entry.seconds, [entry.skip_reason or ""]))
        elif returncode is None:
            why = (
                f"no outcome within {timeout_s:.0f} s: the runner was stopped"
                if entry.started
                else f"not reached: the runner was stopped after {timeout_s:.0f} s"
            )
            results.append(Result(name, "failed", entry.seconds, [*entry.tail, why]))
        elif entry.started:
            why = f"no outcome printed; the runner exited with {returncode}"
            results.append(Result(name, "failed", entry.seconds, [*entry.tail, why]))
        else:
            results.append(Result(name, "skipped", 0.0, ["not run by the test runner"]))
    return results


# --------------------------------------------------------------------------------------------
# The broker and the runs
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """``kvstream serve`` on a free loopback port, its data and log in ``workdir``."""

    def __init__(self, workdir: Path, overrides: Sequence[str]) -> None:
        self.port = _free_port()
        self.log_path = workdir / "broker.log"
        self.command = [sys.executable, "-m", "kvstream", "serve"]
        settings = [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
            f"log.dirs={workdir / 'data'}",
            "num.partitions=4",
            "auto.create.topics.enable=true",
            *overrides,
        ]
        for item in settings:
            self.command += ["--override", item]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvstream exited with {self.proc.returncode}: {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"kvstream did not listen within {STARTUP_TIMEOUT_S:.0f} s")

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def suite_environment(tests_dir: Path, conf_path: Path, kafka_version: str) -> dict[str, str]:
    """The runner's environment: ours, without any of the suite's variables the caller had
    set (a stray TESTS or KAFKA_PATH would change what runs), plus the library path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TEST", "RDKAFKA_", "KAFKA_", "ZK_", "SUBTESTS", "BROKERS"))
    }
    libs = [str(tests_dir.parent / "src"), str(tests_dir.parent / "src-cpp")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env.update(
        LD_LIBRARY_PATH=":".join(libs),
        RDKAFKA_TEST_CONF=str(conf_path),
        TEST_KAFKA_VERSION=kafka_version,
    )
    return env


def run_number(
    tests_dir: Path, number: str, env: dict[str, str], timeout_s: float, quick: bool = True
) -> tuple[str, int | None]:
    """One test-runner process for ``number``: (its output, exit code or None if stopped)."""
    proc = subprocess.Popen(
        ["./test-runner", *(["-Q"] if quick else []), "-L", "-p1"],
        cwd=tests_dir,
        env={**env, "TESTS": number},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a stop reaches the runner's children too
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return out.decode("utf-8", "replace"), proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return out.decode("utf-8", "replace"), None


def librdkafka_version(tests_dir: Path) -> str:
    header = tests_dir.parent / "src" / "rdkafka.h"
    try:
        m = re.search(r"#define\s+RD_KAFKA_VERSION\s+0x([0-9a-fA-F]{8})", header.read_text())
    except OSError:
        return "unknown"
    if m is None:
        return "unknown"
    v = int(m.group(1), 16)
    return f"{v >> 24}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}"


def has_long_subtests(tests_dir: Path, number: str) -> bool:
    """Whether the source of test ``number`` has sub-tests not marked quick (``SUB_TEST(``,
    not ``SUB_TEST_QUICK(``), which quick mode leaves out."""
    pattern = re.compile(r"\bSUB_TEST\s*\(")
    for path in sorted(tests_dir.glob(f"{number}-*")):
        if path.suffix in (".c", ".cpp") and pattern.search(path.read_text(errors="replace")):
            return True
    return False


def _stats_files(tests_dir: Path) -> set[Path]:
    return set(tests_dir.glob("stats_*.json"))


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tests-dir", type=Path, required=True, help="librdkafka's built tests/")
    parser.add_argument("--tests", help="comma-separated test numbers or names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the selection, run nothing")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per test number")
    parser.add_argument("--kafka-version", default=KAFKA_VERSION)
    parser.add_argument(
        "--full", action="store_true", help="not in quick mode: every sub-test, more data"
    )
    parser.add_argument(
        "--subtests", help="run only the sub-tests whose name contains this (the suite's SUBTESTS)"
    )
    parser.add_argument(
        "--override", action="append", default=[], help="broker setting key=value (repeatable)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the broker's data and log, and each run's output"
    )
    args = parser.parse_args(argv)
    tests_dir: Path = args.tests_dir.resolve()
    runner = tests_dir / "test-runner"
    table = tests_dir / "test.c"
    if not os.access(runner, os.X_OK) or not table.is_file():
        parser.error(f"{tests_dir} has no built test-runner beside test.c")
    wanted = [t.strip() for t in args.tests.split(",") if t.strip()] if args.tests else None
    chosen, left = select(parse_test_table(table.read_text()), args.kafka_version, wanted)
    if args.list:
        for entry in chosen:
            print(json.dumps({"test": entry.name, "selected": True}), file=out)
        for entry, reason in left:
            print(json.dumps({"test": entry.name, "selected": False, "why": reason}), file=out)
        return 0
    by_number: dict[str, list[str]] = {}
    for entry in chosen:
        by_number.setdefault(entry.number, []).append(entry.name)

    workdir = Path(tempfile.mkdtemp(prefix="kvstream-librdkafka-suite-"))
    broker = Broker(workdir, args.override)
    conf = workdir / "test.conf"
    conf.write_text(f"bootstrap.servers={broker.bootstrap}\n")
    env = suite_environment(tests_dir, conf, args.kafka_version)
    if args.subtests:
        env["SUBTESTS"] = args.subtests
    stats_before = _stats_files(tests_dir)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    broker.start()
    try:
        for number, names in by_number.items():
            text, code = run_number(tests_dir, number, env, args.timeout, quick=not args.full)
            if args.keep:
                (workdir / f"runner-{number}.log").write_text(text)
            results = parse_output(
                text,
                names,
                returncode=code,
                timeout_s=args.timeout,
                long_subtests_left_out=not args.full and has_long_subtests(tests_dir, number),
            )
            died = broker.exit_code()
            for result in results:
                if died is not None and result.result == "failed":
                    result.lines.append(f"the broker exited with {died}: {broker.log_path}")
                counts[result.result] += 1
                print(result.as_json(), file=out, flush=True)
            if died is not None:
                print(json.dumps({"stopped": f"the broker exited with {died}"}), file=out)
                break
    finally:
        broker.stop()
        for path in _stats_files(tests_dir) - stats_before:
            path.unlink(missing_ok=True)  # the runner's per-test statistics files
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, object] = {
        "summary": counts,
        "librdkafka": librdkafka_version(tests_dir),
        "kafka_version": args.kafka_version,
        "mode": "full" if args.full else "quick",
        "command": " ".join(["tools/librdkafka_suite.py", *(argv or sys.argv[1:])]),
    }
    if args.keep:
        summary["workdir"] = str(workdir)
    print(json.dumps(summary), file=out)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
