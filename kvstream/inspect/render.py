"""Showing what kvstream-inspect read: aligned text tables for people, JSON lines for programs.

OWNS: the table layout, the text form of timestamps and of key/value bytes, and the JSON field
names of every subcommand's output (stable: scripts depend on them; add fields, never rename).
MUST NOT KNOW: the store, keys, argparse, trio. Input is the dataclasses of
kvstream/inspect/read.py and kvstream/inspect/check.py; output is strings (lines).

JSON lines: one object per line, compact, keys in a fixed order. Bytes shown to a person are a
pair of fields, ``<name>`` (text or base64) and ``<name>_encoding`` ("text", "base64", or null
when the bytes are null). ``dump`` and ``check`` mix two kinds of object, told apart by
``"type"``: dump writes a "batch" object followed by one "record" object per record; check
writes one "problem" object per problem and a final "summary".
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from kvstream.inspect.check import CheckResult, Problem
from kvstream.inspect.copy import CopyResult
from kvstream.inspect.read import (
    BatchDump,
    Data,
    GroupOffset,
    GroupSummary,
    PartitionInfo,
    ProducerInfo,
    RecordDump,
    StoreStat,
    TopicInfo,
)

# --------------------------------------------------------------------------------------------
# Pure building blocks


def _numeric(cell: str) -> bool:
    return cell.lstrip("-").isdigit()


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lines of an aligned table: a header row, then one line per row.

    Numbers are right-aligned, everything else left-aligned; columns are two spaces apart and
    lines carry no trailing spaces. A row shorter than ``columns`` is padded with empty cells.
    """
    body = [[str(c) for c in row] + [""] * (len(columns) - len(row)) for row in rows]
    widths = [len(c) for c in columns]
    for row in body:
        if len(row) > len(columns):
            raise ValueError(f"row of {len(row)} cells for {len(columns)} columns")
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    right = [
        any(_numeric(row[i]) for row in body)
        and all(_numeric(row[i]) or row[i] in ("", "-") for row in body)
        for i in range(len(columns))
    ]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if right[i] else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    return [line(list(columns))] + [line(row) for row in body]


def timestamp_text(ms: int | None) -> str:
    """ISO 8601 UTC with milliseconds; "-" for None or a negative (absent) timestamp."""
    if ms is None or ms < 0:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def data_text(data: Data | None) -> str:
    """Bytes for a text line: null, a quoted string with control characters escaped, or
    ``base64:...``."""
    if data is None:
        return "null"
    if data.encoding == "base64":
        return f"base64:{data.text}"
    return json.dumps(data.text, ensure_ascii=False)


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = dataclasses.asdict(obj)
    return out


def _data_fields(name: str, data: Data | None) -> dict[str, Any]:
    if data is None:
        return {name: None, f"{name}_encoding": None}
    return {name: data.text, f"{name}_encoding": data.encoding}


# --------------------------------------------------------------------------------------------
# Per subcommand


def stat_lines(stat: StoreStat, as_json: bool) -> list[str]:
    if as_json:
        return [json_line(_plain(stat))]
    used = (
        f"{stat.used_pages} pages of {stat.page_size} bytes"
        if stat.used_pages is not None and stat.page_size is not None
        else "-"
    )
    rows = [
        ("path", stat.path),
        ("engine", stat.engine),
        ("recorded engine", stat.recorded_engine),
        ("format version", str(stat.format_version)),
        ("cluster id", stat.cluster_id),
        ("file size", f"{stat.file_size} bytes"),
        ("used", used),
        ("map size", "-" if stat.map_size is None else f"{stat.map_size} bytes"),
        ("entries", str(stat.entries)),
        ("topics", str(stat.topics)),
        ("partitions", str(stat.partitions)),
        ("groups", str(stat.groups)),
        ("metadata records", str(stat.metadata_records)),
        ("next producer id", str(stat.next_producer_id)),
    ]
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)}  {v}" for k, v in rows]


def topics_lines(topics: Sequence[TopicInfo], as_json: bool) -> list[str]:
    if as_json:
        return [json_line(_plain(t)) for t in topics]
    rows = [
        [
            t.name,
            t.topic_id,
            str(t.partitions),
            ",".join(f"{k}={v}" for k, v in t.configs.items()) or "-",
        ]
        for t in topics
    ]
    return table(["TOPIC", "ID", "PARTITIONS", "CONFIGS"], rows)


def partitions_lines(parts: Sequence[PartitionInfo], as_json: bool) -> list[str]:
    if as_json:
        return [json_line(_plain(p)) for p in parts]
    rows = [
        [
            p.topic,
            str(p.partition),
            str(p.log_start_offset),
            str(p.high_watermark),
            str(p.log_end_offset),
            str(p.batches),
            str(p.records),
            str(p.bytes),
            timestamp_text(p.first_timestamp),
            timestamp_text(p.last_timestamp),
        ]
        for p in parts
    ]
    columns = ["TOPIC", "PARTITION", "LOG_START", "HIGH_WATERMARK", "LOG_END", "BATCHES"]
    columns += ["RECORDS", "BYTES", "FIRST_TIMESTAMP", "LAST_TIMESTAMP"]
    return table(columns, rows)


def batch_json(batch: BatchDump) -> dict[str, Any]:
    out = _plain(batch)
    del out["records"]
    return {"type": "batch", **out}


def record_json(batch: BatchDump, rec: RecordDump) -> dict[str, Any]:
    return {
        "type": "record",
        "topic": batch.topic,
        "partition": batch.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        "timestamp_type": batch.timestamp_type,
        **_data_fields("key", rec.key),
        **_data_fields("value", rec.value),
        "headers": [{"key": h.key, **_data_fields("value", h.value)} for h in rec.headers],
        "batch_base_offset": batch.base_offset,
    }


def dump_lines(batches: Iterable[BatchDump], as_json: bool) -> Iterator[str]:
    """Lines of a dump, produced as the batches are read (a dump may be long)."""
    for batch in batches:
        if as_json:
            yield json_line(batch_json(batch))
            for rec in batch.records:
                yield json_line(record_json(batch, rec))
            continue
        flags = [
            f"compression={batch.compression}",
            f"timestamp_type={batch.timestamp_type}",
            f"max_timestamp={timestamp_text(batch.max_timestamp)}",
            f"producer_id={batch.producer_id}",
            f"producer_epoch={batch.producer_epoch}",
            f"base_sequence={batch.base_sequence}",
            f"transactional={str(batch.transactional).lower()}",
            f"control={str(batch.control).lower()}",
        ]
        if batch.control_type is not None:
            flags.append(f"control_type={batch.control_type}")
        if batch.delete_horizon:
            flags.append("delete_horizon=true")
        flags.append(f"crc={'ok' if batch.crc_ok else 'MISMATCH'}")
        head = [
            f"batch {batch.topic}/{batch.partition}",
            f"offsets {batch.base_offset}..{batch.last_offset}",
            f"records={batch.records_count}",
            f"size={batch.size}",
        ]
        yield " ".join(head + flags)
        if batch.error is not None:
            yield f"  error: {batch.error}"
        for rec in batch.records:
            headers = ", ".join(
                f"{json.dumps(h.key, ensure_ascii=False)}={data_text(h.value)}" for h in rec.headers
            )
            yield (
                f"  offset={rec.offset} timestamp={timestamp_text(rec.timestamp)}"
                f" key={data_text(rec.key)} value={data_text(rec.value)} headers=[{headers}]"
            )


def groups_lines(groups: Sequence[GroupSummary], as_json: bool) -> list[str]:
    if as_json:
        return [json_line(_plain(g)) for g in groups]
    rows = [
        [g.group, str(g.topics), str(g.partitions), _opt(g.lag), timestamp_text(g.last_commit_ms)]
        for g in groups
    ]
    return table(["GROUP", "TOPICS", "PARTITIONS", "LAG", "LAST_COMMIT"], rows)


def offsets_lines(offsets: Sequence[GroupOffset], as_json: bool) -> list[str]:
    if as_json:
        return [json_line(_plain(o)) for o in offsets]
    rows = [
        [
            o.topic,
            str(o.partition),
            str(o.offset),
            _opt(o.high_watermark),
            _opt(o.lag),
            str(o.leader_epoch),
            "null" if o.metadata is None else json.dumps(o.metadata, ensure_ascii=False),
            timestamp_text(o.commit_timestamp_ms),
        ]
        for o in offsets
    ]
    columns = ["TOPIC", "PARTITION", "OFFSET", "HIGH_WATERMARK", "LAG", "LEADER_EPOCH"]
    columns += ["METADATA", "COMMITTED_AT"]
    return table(columns, rows)


def producers_lines(producers: Sequence[ProducerInfo], as_json: bool) -> list[str]:
    if as_json:
        return [json_line(_plain(p)) for p in producers]
    rows = [
        [
            p.topic,
            str(p.partition),
            str(p.producer_id),
            str(p.producer_epoch),
            str(p.last_sequence),
            _opt(p.last_offset),
            " ".join(
                f"{b.first_sequence}..{b.last_sequence}@{b.first_offset}..{b.last_offset}"
                for b in p.batches
            )
            or "-",
        ]
        for p in producers
    ]
    columns = ["TOPIC", "PARTITION", "PRODUCER_ID", "EPOCH", "LAST_SEQUENCE", "LAST_OFFSET"]
    columns += ["BATCHES (sequences@offsets)"]
    return table(columns, rows)


def problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "type": "problem",
        "topic": problem.topic,
        "partition": problem.partition,
        "offset": problem.offset,
        "problem": problem.message,
    }


def check_lines(result: CheckResult, as_json: bool) -> list[str]:
    summary = {
        "type": "summary",
        "healthy": result.healthy,
        "problems": len(result.problems),
        "partitions": result.partitions,
        "batches": result.batches,
        "bytes": result.bytes,
        "skipped_partitions": result.skipped,
    }
    if as_json:
        return [json_line(problem_json(p)) for p in result.problems] + [json_line(summary)]
    lines = [f"PROBLEM {p}" for p in result.problems]
    state = "healthy" if result.healthy else f"{len(result.problems)} problem(s)"
    skipped = f", {result.skipped} skipped (changed while checking)" if result.skipped else ""
    lines.append(
        f"{state}: {result.partitions} partitions, {result.batches} batches, "
        f"{result.bytes} bytes checked{skipped}"
    )
    return lines


def copy_lines(result: CopyResult, as_json: bool) -> list[str]:
    if as_json:
        return [json_line(_plain(result))]
    return [
        f"copied {result.entries} entries ({result.engine}, {result.method}) to {result.dest}: "
        f"{result.source_file_size} -> {result.dest_file_size} bytes"
    ]
