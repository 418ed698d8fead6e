"""tools/librdkafka_suite.py: reading the suite's test table and the test-runner's output.

The tool itself needs a C build of librdkafka and is not run in CI; these tests feed it text
in the shapes the runner prints (written here by hand) and check what it makes of them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "librdkafka_suite.py"

C, R, G = "\x1b[36m", "\x1b[31m", "\x1b[32m"
END = "\x1b[0m"


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kvstream_librdkafka_suite", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


TABLE = """
#define _TEST(NAME, FLAGS, ...) { .name = #NAME, .flags = FLAGS, __VA_ARGS__ }
_TEST_DECL(0001_a);  /* declarations before the table are not entries */
struct test tests[] = {
    /* Special MAIN test */
    {.name = "<MAIN>", .flags = TEST_F_LOCAL},
    _TEST(0000_unittests,
          TEST_F_LOCAL,
          /* heavy, (with parentheses) in a comment */
          _THRES(.ucpu = 100.0, .scpu = 20.0)),
    _TEST(0001_a, 0),
    _TEST(0002_b, 0, TEST_BRKVER(0, 9, 0, 0)),
    _TEST(0002_b_local, TEST_F_LOCAL),
    _TEST(0003_c,
          TEST_F_KNOWN_ISSUE,
          TEST_BRKVER(0, 9, 0, 0),
          .extra = "see issue (529), \\"quoted\\""),
    _TEST(0004_d, 0, TEST_BRKVER_TOPIC_ADMINAPI, .scenario = "noautocreate"),
    _TEST(0005_e, 0, TEST_BRKVER(0, 11, 0, 0), .scenario = "default,ak23"),
#if WITH_SOCKEM
    _TEST(0006_f, TEST_F_SOCKEM, TEST_BRKVER(0, 9, 0, 0)),
#endif
    _TEST(0007_g, 0, TEST_BRKVER(4, 2, 0, 0)),
    _TEST(0008_h, 0, TEST_BRKVER(0, 9, 0, 0), TEST_BRKVER(2, 0, 0, 0)),
    _TEST(8000_idle, TEST_F_MANUAL),
    {NULL}};
"""


def test_parse_test_table(suite: ModuleType) -> None:
    entries = {e.name: e for e in suite.parse_test_table(TABLE)}
    assert list(entries) == [
        "0000_unittests",
        "0001_a",
        "0002_b",
        "0002_b_local",
        "0003_c",
        "0004_d",
        "0005_e",
        "0006_f",
        "0007_g",
        "0008_h",
        "8000_idle",
    ]
    assert entries["0000_unittests"].flags == {"TEST_F_LOCAL"}
    assert entries["0001_a"].flags == frozenset()
    assert entries["0002_b"].min_version == (0, 9, 0, 0)
    assert entries["0003_c"].flags == {"TEST_F_KNOWN_ISSUE"}
    assert entries["0004_d"].min_version == (0, 10, 2, 0)
    assert entries["0004_d"].scenario == "noautocreate"
    assert entries["0005_e"].scenario == "default,ak23"
    assert entries["0006_f"].flags == {"TEST_F_SOCKEM"}
    assert entries["0008_h"].max_version == (2, 0, 0, 0)
    assert entries["0002_b_local"].number == "0002"


def test_select(suite: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = suite.parse_test_table(TABLE)
    monkeypatch.setattr(suite, "LEFT_OUT", {"0006": "needs something"})
    chosen, left = suite.select(entries, "3.9.0")
    assert [e.name for e in chosen] == ["0001_a", "0002_b", "0005_e"]
    why = {e.name: reason for e, reason in left}
    assert "local" in why["0002_b_local"]
    assert "known issue" in why["0003_c"]
    assert "noautocreate" in why["0004_d"]
    assert why["0006_f"] == "needs something"
    assert why["0007_g"] == "needs Kafka 4.2.0"
    assert why["0008_h"] == "for Kafka up to 2.0.0"
    assert why["8000_idle"] == "a manual test"
    # named tests: only those, left-out ones included; the runner's own filters still hold
    chosen, left = suite.select(entries, "3.9.0", ["0002", "0006_f", "0007"])
    assert [e.name for e in chosen] == ["0002_b", "0006_f"]
    assert {e.name for e, _ in left} == {"0002_b_local", "0007_g"}


def _line(test: str, seconds: float, text: str, colour: str = C) -> str:
    return f"{colour}[{test:<28s}/{seconds:7.3f}s] {text}\n{END}"


def _main(text: str) -> str:
    return _line("<MAIN>", 0.0, text)


def test_passed_skipped_and_failed(suite: ModuleType) -> None:
    out = (
        _main("Tests to run     : 0042")
        + _line("0042_a", 0.0, "================= Running test 0042_a =================")
        + _line("0042_a", 0.5, "[ sub_one:12: PASS (0.50s) ]")
        + _line("0042_a", 1.25, f"{G}================= Test 0042_a PASSED ================={END}")
        + _line(
            "0042_b", 0.0, "WARN: SKIPPING TEST: Filtered due to negative test flags", "\x1b[33m"
        )
        + _line("0042_c", 0.0, "================= Running test 0042_c =================")
        + _line("0042_c", 0.1, "WARN: SKIPPING TEST: Cannot create topics (set KAFKA_PATH)")
        + _line("0042_c", 0.2, "================= Test 0042_c SKIPPED =================")
        + _line("0042_d", 0.0, "================= Running test 0042_d =================")
        + _line("0042_d", 2.0, "produced 100 messages")
        + _line("0042_d", 3.5, "counts: 100 and 0")
        + _line("0042_d", 3.5, "TEST FAILURE")
        + f'{R}### Test "0042_d (sub_two:629)" failed at 0042-d.c:718:sub_two() at Tue: ###\n'
        + 'Test assertion failed: "count == 10": \n'
        + _main("ALL-TESTS: duration 5000ms")
        + _main("TEST FAILURE")
        + f'{R}### Test "<MAIN>" failed at test.c:1946:test_wait_exit() at Tue: ###\n'
        + "3 thread(s) still active in librdkafka\n"
    )
    results = suite.parse_output(
        out, ["0042_a", "0042_b", "0042_c", "0042_d"], returncode=134, timeout_s=60.0
    )
    by_name = {r.test: r for r in results}
    assert [r.test for r in results] == ["0042_a", "0042_b", "0042_c", "0042_d"]
    assert (by_name["0042_a"].result, by_name["0042_a"].seconds) == ("passed", 1.25)
    assert by_name["0042_a"].lines == []
    assert by_name["0042_b"].result == "skipped"
    assert by_name["0042_b"].lines == ["Filtered due to negative test flags"]
    assert by_name["0042_c"].result == "skipped"
    assert by_name["0042_c"].lines == ["Cannot create topics (set KAFKA_PATH)"]
    failed = by_name["0042_d"]
    assert failed.result == "failed"
    assert failed.seconds == 3.5
    assert failed.lines[-2].startswith('### Test "0042_d (sub_two:629)" failed at 0042-d.c:718')
    assert failed.lines[-1] == 'Test assertion failed: "count == 10":'
    assert "counts: 100 and 0" in failed.lines
    # MAIN's failure follows the test's own one; it is not added to a test that failed already
    assert not any("still active" in line for line in failed.lines)
    row = json.loads(failed.as_json())
    assert row["test"] == "0042_d" and row["result"] == "failed" and row["lines"] == failed.lines


def test_a_main_failure_alone_fails_the_last_test(suite: ModuleType) -> None:
    out = (
        _line("0050_a", 0.0, "================= Running test 0050_a =================")
        + _line("0050_a", 2.0, "================= Test 0050_a PASSED =================")
        + _main("TEST FAILURE")
        + f'{R}### Test "<MAIN>" failed at test.c:1946:test_wait_exit() at Tue: ###\n'
        + "1 thread(s) still active in librdkafka\n"
    )
    (result,) = suite.parse_output(out, ["0050_a"], returncode=134)
    assert result.result == "failed"
    assert result.lines[-1] == "1 thread(s) still active in librdkafka"


def test_a_pass_that_ran_nothing_is_a_skip(suite: ModuleType) -> None:
    """In quick mode the runner leaves out the sub-tests not marked quick: a test whose source
    has such sub-tests and that started none passed having tested next to nothing."""
    out = (
        _line("0080_a", 0.0, "================= Running test 0080_a =================")
        + _line("0080_a", 0.0, 'Using topic "rdkafkatest_0080_a"')
        + _line("0080_a", 0.025, "Produced 100 messages")
        + _line("0080_a", 0.025, "================= Test 0080_a PASSED =================")
        + _line("0080_b", 0.0, "================= Running test 0080_b =================")
        + _line("0080_b", 0.0, "[ do_quick:12 ]")
        + _line("0080_b", 0.0, "[ do_quick:12: PASS (0.00s) ]")
        + _line("0080_b", 0.0, "================= Test 0080_b PASSED =================")
    )
    names = ["0080_a", "0080_b"]
    a, b = suite.parse_output(out, names, returncode=0, long_subtests_left_out=True)
    assert (a.result, a.lines) == ("skipped", [suite.NOTHING_RAN])
    assert b.result == "passed"
    # without long sub-tests left out (a full run, or none in the source) a pass is a pass
    a, b = suite.parse_output(out, names, returncode=0)
    assert (a.result, b.result) == ("passed", "passed")


def test_long_subtests_in_the_source(suite: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "0090-a.c").write_text('static void f(void) { SUB_TEST("x=%d", 1); }\n')
    (tmp_path / "0091-b.cpp").write_text("static void f() { SUB_TEST_QUICK(); }\n")
    (tmp_path / "0092-c.c").write_text("int main_0092_c(int argc, char **argv) { return 0; }\n")
    assert suite.has_long_subtests(tmp_path, "0090")
    assert not suite.has_long_subtests(tmp_path, "0091")
    assert not suite.has_long_subtests(tmp_path, "0092")
    assert not suite.has_long_subtests(tmp_path, "0093")


def test_a_stopped_run(suite: ModuleType) -> None:
    out = _line("0060_a", 0.0, "================= Running test 0060_a =================") + _line(
        "0060_a", 30.0, "waiting for the consumer group"
    )
    hung, never = suite.parse_output(out, ["0060_a", "0060_b"], returncode=None, timeout_s=600)
    assert hung.result == "failed"
    assert hung.lines[-2:] == [
        "waiting for the consumer group",
        "no outcome within 600 s: the runner was stopped",
    ]
    assert never.result == "failed"
    assert never.lines == ["not reached: the runner was stopped after 600 s"]


def test_a_runner_that_ran_nothing(suite: ModuleType) -> None:
    (result,) = suite.parse_output(_main("Tests to run: 0070"), ["0070_a"], returncode=0)
    assert (result.result, result.lines) == ("skipped", ["not run by the test runner"])
    crashed = suite.parse_output(
        _line("0070_a", 0.0, "================= Running test 0070_a ================="),
        ["0070_a"],
        returncode=-11,
    )
    assert crashed[0].result == "failed"
    assert crashed[0].lines[-1] == "no outcome printed; the runner exited with -11"


def test_version_from_the_header(suite: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "src" / "rdkafka.h").write_text("#define RD_KAFKA_VERSION 0x020f00ff\n")
    assert suite.librdkafka_version(tmp_path / "tests") == "2.15.0"
    assert suite.librdkafka_version(tmp_path / "nowhere" / "tests") == "unknown"
