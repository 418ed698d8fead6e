"""The benchmark's ratio lines (tools/bench.py): which rounds count and how the interval is built.

The verdict of the performance targets is read from these lines, so their arithmetic is tested
here rather than trusted; no broker is started.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kvstream_bench_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _run(bench: ModuleType, rows: list[dict[str, Any]]) -> Any:
    run = bench.Run(machine={}, commit="test", partitions=1, quick=False, out=None, rounds=4)
    run.rows.extend(rows)
    return run


def _row(broker: str, round_no: int, value: float, **extra: Any) -> dict[str, Any]:
    row = {"broker": broker, "scenario": "produce_100B", "round": round_no, "msgs_per_s": value}
    return row | extra


def test_warmup_rounds_and_failed_rounds_are_left_out(bench: ModuleType) -> None:
    rows = [
        _row("kvstream", 0, 10.0),  # warm-up: a slow first process must not count
        _row("tansu", 0, 100.0),
        _row("kvstream", 1, 110.0),
        _row("tansu", 1, 100.0),
        _row("kvstream", 2, 90.0),
        _row("tansu", 2, 100.0, error="deadline"),  # no pair in round 2
        _row("kvstream", 3, 100.0),
        _row("tansu", 3, 125.0),
    ]
    run = _run(bench, rows)
    out = bench.paired_ratios(run, "produce_100B", "msgs_per_s", True)
    assert out["round_ratios"] == [1.1, 0.8]
    assert "ci90" not in out  # two pairs are too few for an interval
    median, good, bad = bench.median_of(run, "kvstream", "produce_100B", "msgs_per_s")
    assert (median, good, bad) == (100.0, 3, 0)
    median, good, bad = bench.median_of(run, "tansu", "produce_100B", "msgs_per_s")
    assert (median, good, bad) == (112.5, 2, 1)


def test_interval_is_a_t_interval_on_the_logarithms(bench: ModuleType) -> None:
    kv = [105.0, 98.0, 110.0, 101.0]
    ta = [100.0, 100.0, 100.0, 100.0]
    rows = [_row("kvstream", i + 1, k) for i, k in enumerate(kv)]
    rows += [_row("tansu", i + 1, t) for i, t in enumerate(ta)]
    out = bench.paired_ratios(_run(bench, rows), "produce_100B", "msgs_per_s", True)
    logs = [math.log(k / t) for k, t in zip(kv, ta, strict=True)]
    half = 2.353 * statistics.stdev(logs) / 2  # t(0.95, 3 degrees of freedom), sqrt(4)
    mean = statistics.fmean(logs)
    assert out["round_ratios"] == [1.05, 0.98, 1.1, 1.01]
    assert out["geomean"] == round(math.exp(mean), 3)
    assert out["ci90"] == [round(math.exp(mean - half), 3), round(math.exp(mean + half), 3)]
    assert out["ci90"][0] < 1.0 < out["ci90"][1]  # these rounds cannot tell the two apart


def test_latency_ratios_put_tansu_over_kvstream(bench: ModuleType) -> None:
    rows = []
    for i, (k, t) in enumerate([(5.0, 500.0), (4.0, 520.0), (10.0, 510.0)], start=1):
        rows.append({"broker": "kvstream", "scenario": "e2e_latency", "round": i, "p99_ms": k})
        rows.append({"broker": "tansu", "scenario": "e2e_latency", "round": i, "p99_ms": t})
    out = bench.paired_ratios(_run(bench, rows), "e2e_latency", "p99_ms", False)
    assert out["round_ratios"] == [100.0, 130.0, 51.0]
    assert out["ci90"][0] < out["geomean"] < out["ci90"][1]
    assert out["ci90"][0] > 1.0
