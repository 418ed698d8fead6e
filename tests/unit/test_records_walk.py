"""The C record walker (protocol/_walk.c) decides exactly like the Python reference walk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstream.protocol import records as rec

native = rec._native_walk


def test_native_walker_is_built() -> None:
    # `pip install -e .` compiles it (gcc is on every machine we run on); without it produce
    # validation falls back to the ~40x slower Python walk.
    assert native is not None


def _outcome(fn: object, d: bytes, p: int, end: int, count: int, max_delta: int) -> bool:
    try:
        fn(d, p, end, count, max_delta)  # type: ignore[operator]
    except rec.InvalidRecordBatch:
        return False
    return True


def _section(batch: bytes) -> tuple[bytes, int, int, int]:
    header = rec.parse_header(batch)
    max_delta = header.last_offset_delta if header.records_count else -1
    return batch, rec.HEADER_SIZE, header.records_count, max_delta


_record = st.tuples(
    st.none() | st.binary(max_size=300),
    st.none() | st.binary(max_size=3000),
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=20)), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(_record, min_size=1, max_size=12),
    deltas=st.none() | st.lists(st.integers(-(2**40), 2**40), min_size=12, max_size=12),
    mutations=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 10_000),
    count_shift=st.integers(-2, 2),
)
def test_native_and_python_walks_agree(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    deltas: list[int] | None,
    mutations: list[tuple[int, int]],
    cut: int | None,
    count_shift: int,
) -> None:
    assert native is not None
    batch = bytearray(
        rec.build_batch(
            records, timestamp_deltas=deltas[: len(records)] if deltas is not None else None
        )
    )
    for pos, value in mutations:
        if rec.HEADER_SIZE <= pos < len(batch):
            batch[pos] = value
    data = bytes(batch if cut is None else batch[: max(rec.HEADER_SIZE, cut)])
    _, start, count, max_delta = _section(bytes(batch))
    count = max(0, count + count_shift)
    python = _outcome(rec._walk_records, data, start, len(data), count, max_delta)
    c = _outcome(rec._walk, data, start, len(data), count, max_delta)
    assert python == c


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff" * 12, b"\x80" * 11, b"\x0c" + b"\x00" * 6])
def test_garbage_sections_agree(junk: bytes) -> None:
    for count in (0, 1, 2):
        python = _outcome(rec._walk_records, junk, 0, len(junk), count, count - 1)
        c = _outcome(rec._walk, junk, 0, len(junk), count, count - 1)
        assert python == c
