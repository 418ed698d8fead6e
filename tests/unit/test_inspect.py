"""kvstream-inspect's pure parts, and its rules over small LMDB stores written key by key.

The printable/base64 decision, table layout, timestamps, the JSON field names, the continuity
rule between batches, the per-batch checks (CRC, index entry, density), and `check` over stores
shaped like a healthy log, a compacted one (gaps allowed) and broken ones (gaps, a missing index
key, a flipped byte, an orphan key). The real-broker tests are tests/integration/test_inspect.py.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kvstream.inspect import check_store
from kvstream.inspect.check import batch_problems, check, continuity_problem
from kvstream.inspect.cli import ProgressBar, main
from kvstream.inspect.read import Data, Inspector, decode_batch, text_or_base64
from kvstream.inspect.render import dump_lines, json_line, table, timestamp_text
from kvstream.log import keys
from kvstream.log.metadata import encode_record, topic_record
from kvstream.log.partition import IndexEntry
from kvstream.protocol import records
from kvstream.storage.base import WriteTxn
from kvstream.storage.open import open_store

# -- printable or base64 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"hello", b"", "nämé ключ 🎉".encode(), b"line one\nline two\ttab\r"],
)
def test_printable_utf8_is_text(data: bytes) -> None:
    assert text_or_base64(data) == ("text", data.decode())


@pytest.mark.parametrize(
    "data",
    [b"\x00\xff", b"\xc3\x28", b"ok\x01", b"bell\x07", "zero\u200bwidth".encode(), b"\x7f"],
)
def test_binary_or_control_characters_are_base64(data: bytes) -> None:
    encoding, text = text_or_base64(data)
    assert encoding == "base64"
    assert base64.b64decode(text) == data


def test_data_of_none_is_none() -> None:
    assert Data.of(None) is None
    assert Data.of(b"x") == Data("text", "x")


# -- rendering -------------------------------------------------------------------------------


def test_table_aligns_numbers_right_and_text_left() -> None:
    lines = table(["NAME", "COUNT", "NOTE"], [["a", "5", "-"], ["long-name", "12345", "x y"]])
    assert lines == [
        "NAME       COUNT  NOTE",
        "a              5  -",
        "long-name  12345  x y",
    ]


def test_table_pads_short_rows_and_has_no_trailing_spaces() -> None:
    lines = table(["A", "B"], [["x"], ["yy", "1"]])
    assert lines == ["A   B", "x", "yy  1"]
    assert all(line == line.rstrip() for line in lines)


def test_table_refuses_a_row_longer_than_the_columns() -> None:
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        table(["A", "B"], [["1", "2", "3"]])


def test_table_without_rows_is_the_header() -> None:
    assert table(["A", "BB"], []) == ["A  BB"]


def test_timestamp_text() -> None:
    assert timestamp_text(0) == "1970-01-01T00:00:00.000Z"
    assert timestamp_text(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert timestamp_text(-1) == "-"
    assert timestamp_text(None) == "-"


def _batch(
    n: int,
    *,
    base: int = 0,
    pid: int = -1,
    compression: records.Compression = records.Compression.NONE,
) -> bytes:
    recs: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
        (f"k{i}".encode() if i % 2 else None, b"\x00\xff" if i == 1 else f"v{i}".encode(), [])
        for i in range(n)
    ]
    if n:
        recs[0] = (b"k0", b"v0", [("h", b"x"), ("nil", None)])
    return records.build_batch(
        recs,
        base_offset=base,
        base_timestamp=1_000,
        compression=compression,
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=0 if pid >= 0 else -1,
    )


def test_dump_json_field_names_are_stable() -> None:
    batch = decode_batch("t", 0, _batch(2, base=5, pid=7, compression=records.Compression.GZIP))
    out = list(dump_lines([batch], as_json=True))
    assert len(out) == 3
    head, first, second = (json.loads(line) for line in out)
    assert head["type"] == "batch"
    assert {
        "topic",
        "partition",
        "base_offset",
        "last_offset",
        "size",
        "records_count",
        "compression",
        "timestamp_type",
        "producer_id",
        "producer_epoch",
        "base_sequence",
        "transactional",
        "control",
        "control_type",
        "crc_ok",
    } <= set(head)
    assert (head["compression"], head["producer_id"], head["crc_ok"]) == ("gzip", 7, True)
    assert list(first) == [
        "type",
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestamp_type",
        "key",
        "key_encoding",
        "value",
        "value_encoding",
        "headers",
        "batch_base_offset",
    ]
    assert (first["offset"], first["key"], first["value"]) == (5, "k0", "v0")
    assert first["headers"] == [
        {"key": "h", "value": "x", "value_encoding": "text"},
        {"key": "nil", "value": None, "value_encoding": None},
    ]
    assert (second["value"], second["value_encoding"]) == ("AP8=", "base64")
    assert second["key"] == "k1"


def test_dump_text_lines_mark_base64_and_null() -> None:
    lines = list(dump_lines([decode_batch("t", 3, _batch(3))], as_json=False))
    assert lines[0].startswith("batch t/3 offsets 0..2 records=3")
    assert "crc=ok" in lines[0]
    assert 'key="k0" value="v0" headers=["h"="x", "nil"=null]' in lines[1]
    assert "value=base64:AP8=" in lines[2]
    assert "key=null" in lines[3]


def test_decode_batch_from_and_count() -> None:
    dumped = decode_batch("t", 0, _batch(6, base=10), from_offset=12, count=2)
    assert [r.offset for r in dumped.records] == [12, 13]
    assert dumped.records_count == 6


def test_decode_batch_marks_control_markers() -> None:
    marker = records.build_control_batch(
        records.ControlType.COMMIT, producer_id=3, producer_epoch=1
    )
    dumped = decode_batch("t", 0, marker)
    assert (dumped.control, dumped.transactional, dumped.control_type) == (True, True, "commit")


def test_json_line_is_one_line() -> None:
    assert json_line({"a": "x\ny", "b": None}) == '{"a":"x\\ny","b":null}'


def test_progress_bar_draws_and_clears() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, "check", interval=0.0)
    bar(512 * 1024, 1024 * 1024)
    bar(1024 * 1024, 1024 * 1024)
    bar.clear()
    text = out.getvalue()
    assert " 50% " in text and "100% " in text
    assert text.endswith("\r\033[K")


# -- continuity and per-batch rules ----------------------------------------------------------


def test_continuity_first_batch_and_exact_successor_are_fine() -> None:
    for compacted in (False, True):
        assert continuity_problem(None, 17, compacted) is None
        assert continuity_problem(9, 10, compacted) is None


def test_continuity_gap_is_allowed_only_when_compacted() -> None:
    assert continuity_problem(9, 15, compacted=True) is None
    problem = continuity_problem(9, 15, compacted=False)
    assert problem is not None and "gap of 5 offsets" in problem


@pytest.mark.parametrize("base", [9, 5, 0])
def test_continuity_overlap_is_never_allowed(base: int) -> None:
    for compacted in (False, True):
        problem = continuity_problem(9, base, compacted)
        assert problem is not None and "overlaps" in problem


def test_batch_problems_healthy_batch() -> None:
    raw = _batch(4, base=8, pid=1, compression=records.Compression.ZSTD)
    header, found = batch_problems(raw, 8, IndexEntry.of_batch(raw), compacted=False, deep=True)
    assert header is not None and found == []


def test_batch_problems_flipped_byte_is_a_crc_mismatch() -> None:
    raw = bytearray(_batch(4))
    raw[-3] ^= 0x01
    _header, found = batch_problems(bytes(raw), 0, IndexEntry.of_batch(bytes(raw)), False, False)
    assert any("CRC32C mismatch" in f for f in found)


def test_batch_problems_index_mismatch_names_the_field() -> None:
    raw = _batch(3, base=4)
    wrong = dataclasses.replace(IndexEntry.of_batch(raw), last_offset=99)
    _header, found = batch_problems(raw, 4, wrong, False, False)
    assert found == ["index last offset 99 != batch 6"]
    _header, found = batch_problems(raw, 4, None, False, False)
    assert found == ["batch has no index entry"]
    _header, found = batch_problems(raw, 5, IndexEntry.of_batch(raw), False, False)
    assert found == ["batch base offset 4 differs from its key"]


def test_batch_problems_unparsable_header() -> None:
    header, found = batch_problems(b"\x00" * 20, 0, None, False, False)
    assert header is None and len(found) == 1 and "does not parse" in found[0]


# -- check over small stores -----------------------------------------------------------------

TOPIC_ID = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


def _write_store(
    path: Path,
    batches: list[bytes],
    *,
    configs: dict[str, str] | None = None,
    state: tuple[int, int] | None = None,
    skip_index: int | None = None,
    extra: dict[bytes, bytes] | None = None,
) -> None:
    """A one-partition topic "t" holding ``batches`` (stamped at their own base offsets)."""
    store = open_store(path, "lmdb")

    def fill(txn: WriteTxn) -> None:
        txn.put(keys.FORMAT_KEY, keys.BE32.pack(keys.FORMAT_VERSION))
        txn.put(keys.CLUSTER_ID_KEY, b"test-cluster")
        txn.put(keys.NEXT_PRODUCER_ID_KEY, keys.BE64.pack(0))
        txn.put(keys.metadata_key(0), encode_record(topic_record("t", TOPIC_ID, 1, configs or {})))
        end = 0
        for raw in batches:
            h = records.parse_header(raw)
            txn.put(keys.batch_key(TOPIC_ID, 0, h.base_offset), raw)
            if h.base_offset != skip_index:
                e = IndexEntry.of_batch(raw)
                txn.put(keys.index_key(TOPIC_ID, 0, h.base_offset), e.encode())
            end = h.last_offset + 1
        start, end = state if state is not None else (0, end)
        txn.put(keys.partition_state_key(TOPIC_ID, 0), keys.PARTITION_STATE.pack(start, end))
        for key, value in (extra or {}).items():
            txn.put(key, value)

    try:
        store.transact(fill)
    finally:
        store.close()


def _gapped(first_last: int, second_base: int, second_n: int) -> list[bytes]:
    """Two batches: offsets 0..first_last (dense), then ``second_n`` records from second_base."""
    return [_batch(first_last + 1, base=0), _batch(second_n, base=second_base)]


def test_check_healthy_store(tmp_path: Path) -> None:
    _write_store(tmp_path, [_batch(3, base=0), _batch(2, base=3), _batch(4, base=5)])
    assert check_store(tmp_path) == []
    with Inspector(tmp_path) as ins:
        result = check(ins, deep=True)
        parts = ins.partitions()
    assert (result.partitions, result.batches, result.healthy) == (1, 3, True)
    assert [(p.log_start_offset, p.high_watermark, p.batches, p.records) for p in parts] == [
        (0, 9, 3, 9)
    ]


def test_check_reports_a_stored_topic_config_that_is_not_valid(tmp_path: Path) -> None:
    """A value the broker would not apply (another build's data): named, with the reason."""
    _write_store(tmp_path, [_batch(3, base=0)], configs={"max.message.bytes": "lots", "x.y": "1"})
    assert check_store(tmp_path) == [
        "topic t: config x.y=1 (topic override): unknown topic config",
        "topic t: config max.message.bytes=lots (topic override): Not a number of type INT",
    ]


def test_check_reports_a_gap_unless_the_topic_is_compacted(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    _write_store(plain, _gapped(2, 6, 2))
    assert check_store(plain) == [
        "topic t partition 0 offset 6: gap of 3 offsets before this batch (previous ends at 2) "
        "in a partition that is not compacted"
    ]
    compacted = tmp_path / "compacted"
    _write_store(compacted, _gapped(2, 6, 2), configs={"cleanup.policy": "compact,delete"})
    assert check_store(compacted) == []


def test_check_counts_a_cleaner_checkpoint_as_compacted(tmp_path: Path) -> None:
    _write_store(
        tmp_path,
        _gapped(2, 6, 2),
        extra={keys.cleaner_checkpoint_key(TOPIC_ID, 0): keys.CLEANER_CHECKPOINT.pack(6, -1)},
    )
    assert check_store(tmp_path) == []


def test_check_missing_index_and_bad_state(tmp_path: Path) -> None:
    _write_store(tmp_path, [_batch(3, base=0), _batch(2, base=3)], skip_index=3, state=(7, 5))
    problems = check_store(tmp_path)
    assert "topic t partition 0 offset 3: batch has no index entry" in problems
    assert any("log start 7 <= high watermark 5 <= log end 5 does not hold" in p for p in problems)


def test_check_last_batch_must_end_at_the_log_end(tmp_path: Path) -> None:
    _write_store(tmp_path, [_batch(3, base=0)], state=(0, 10))
    assert check_store(tmp_path) == [
        "topic t partition 0: last batch ends at 2, but the log end is 10"
    ]


def test_check_orphan_keys_of_an_unknown_topic(tmp_path: Path) -> None:
    other = uuid.UUID(int=5)
    _write_store(
        tmp_path,
        [_batch(1)],
        extra={keys.partition_state_key(other, 2): keys.PARTITION_STATE.pack(0, 0)},
    )
    assert check_store(tmp_path) == [f"partition 2: keys under 0x04 for unknown topic id {other}"]


def test_check_flipped_byte(tmp_path: Path) -> None:
    raw = bytearray(_batch(5, base=0))
    raw[records.HEADER_SIZE + 4] ^= 0x40
    _write_store(tmp_path, [bytes(raw)])
    assert check_store(tmp_path) == [
        "topic t partition 0 offset 0: CRC32C mismatch: the batch is corrupt"
    ]


def test_check_store_of_a_non_store(tmp_path: Path) -> None:
    problems = check_store(tmp_path / "missing")
    assert len(problems) == 1 and "no such directory" in problems[0]


# -- command line over a small store ---------------------------------------------------------


def test_cli_exit_status_and_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_store(tmp_path, [_batch(3)])
    assert main([str(tmp_path), "check"]) == 0
    assert "healthy: 1 partitions, 1 batches" in capsys.readouterr().out
    for argv, needle in [
        ([str(tmp_path), "dump", "nope"], "unknown topic 'nope'"),
        ([str(tmp_path), "offsets", "g"], "unknown group 'g'"),
        ([str(tmp_path), "producers", "t", "--partition", "1"], "has no partition 1"),
        ([str(tmp_path / "x"), "stat"], "no such directory"),
    ]:
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and needle in captured.err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "dump", "t", "--count", "x"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_json_may_follow_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_store(tmp_path, [_batch(2)])
    assert main(["--json", str(tmp_path), "topics"]) == 0
    before = capsys.readouterr().out
    assert main([str(tmp_path), "topics", "--json"]) == 0
    assert capsys.readouterr().out == before
    assert before.startswith('{"name":"t","topic_id":"' + str(TOPIC_ID))


def test_check_draws_a_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    _write_store(tmp_path, [_batch(3, base=0), _batch(2, base=3)])
    command = [sys.executable, "-m", "kvstream.inspect", str(tmp_path), "check"]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert (plain.returncode, plain.stderr) == (0, "")
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=slave, timeout=60, check=False
        )
        os.close(slave)
        slave = -1
        drawn = b""
        for _ in range(100):  # bounded: the child has exited, the pty holds what it wrote
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: nothing left
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0 and proc.stdout.startswith(b"healthy: 1 partitions")
    assert b"check [" in drawn and b"100%" in drawn
    assert drawn.endswith(b"\r\x1b[K")


def test_the_tool_imports_neither_trio_nor_the_server() -> None:
    code = (
        "import sys, kvstream.inspect.cli\n"
        "bad = sorted(m for m in sys.modules if m == 'trio' or m.startswith("
        "('trio.', 'kvstream.server', 'kvstream.broker', 'kvstream.handlers', 'kvstream.group')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


def test_decode_batch_of_garbage_reports_instead_of_raising() -> None:
    dumped = decode_batch("t", 1, b"\x00" * 20)
    assert (dumped.base_offset, dumped.records, dumped.crc_ok) == (-1, (), False)
    assert dumped.error is not None and dumped.error.startswith("batch header does not parse")
    raw = bytearray(_batch(3, compression=records.Compression.GZIP))
    raw[-2] ^= 0xFF  # inside the gzip stream
    broken = decode_batch("t", 1, bytes(raw))
    assert broken.crc_ok is False and broken.error is not None and broken.records == ()
