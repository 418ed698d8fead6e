"""`kvstream-inspect check`: the integrity rules of a data directory, and checking a store by them.

OWNS: what "healthy" means for the stored log (every rule below), the :class:`Problem` it
reports, the continuity rule between consecutive batches (a pure function), and
:func:`check_store`, the entry point for callers outside the command line (the integration
test fixture runs it on every broker's data directory).
MUST NOT KNOW: how problems are shown or how the command exits (cli/render), argparse, trio,
the broker. It never writes to the store.

Rules, per partition of every topic in the metadata image (one read snapshot per partition, so
a running LMDB broker is held back from reusing pages for one partition's scan at a time):

- the partition state key exists and log start <= high watermark <= log end (on one node the
  high watermark is the log end offset);
- every batch key has an index key and every index key a batch; the batch header parses, its
  base offset is the one in its key, its length matches the stored bytes, its CRC32C matches,
  and its index entry (last offset, max timestamp, size, producer id/epoch, base sequence,
  records count, attributes) equals what the header says;
- continuity: a batch starts after the previous batch's last offset; in a partition that is not
  compacted it starts exactly there (no gap) and each data batch is dense (last offset delta =
  records count - 1). A partition counts as compacted when its topic's cleanup.policy contains
  "compact" or it has a cleaner checkpoint (0x08: the cleaner has finished a pass on it, for
  example under a broker-wide log.cleanup.policy=compact that no topic config names). The
  cleaner keeps each batch's base offset and last offset delta and removes whole batches, so a
  compacted partition legitimately has gaps between and inside batches, never overlaps;
- the first batch does not lie wholly below the log start (the truncation that moved the start
  deletes those batches in the same commit); in a partition that is not compacted it starts at
  or below the log start (no records missing after it); the last batch ends at log end - 1 (no
  batch at or beyond the log end); a partition without batches has log start = log end;
- producer state values decode;
- every topic config override the metadata holds is a known name with a valid value (the
  broker applies the next layer's value instead of one that is not: a bad stored value would
  silently not be in force);
- no data key (0x02..0x06, 0x08) belongs to a topic id the metadata does not know, or to a
  partition beyond its topic's count (topic deletion removes them in the same commit);
- every dynamic broker config key (0x09) names "" or a node id and its value is a JSON object
  of strings (these keys belong to no topic, so they are never orphans);
- every metadata record decodes, and the engine the store records (0x00 "engine") is the
  engine whose files it holds.

With ``deep=True`` every record of every batch is also decoded (decompressing each batch), and a
batch whose records do not decode, or whose record count is not its header's, is a problem.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from kvstream.inspect.read import (
    MAX_UNCOMPRESSED,
    InspectError,
    Inspector,
    load_image,
)
from kvstream.log import keys
from kvstream.log.metadata import TopicImage
from kvstream.log.partition import IndexEntry
from kvstream.log.producer_state import ProducerEntry
from kvstream.protocol import records
from kvstream.storage.base import ReadTxn
from kvstream.topic_config import parse_topic_config

Progress = Callable[[int, int], None]
"""Called with (bytes checked, bytes to check) as the check goes."""

_TP: Final = struct.Struct(">16si")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, located as precisely as the rule allows."""

    message: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = []
        if self.topic is not None:
            where.append(f"topic {self.topic}")
        if self.partition is not None:
            where.append(f"partition {self.partition}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return f"{' '.join(where)}: {self.message}" if where else self.message


@dataclass(frozen=True, slots=True)
class CheckResult:
    problems: list[Problem]
    partitions: int
    batches: int
    bytes: int
    skipped: int
    """Partitions left out because their topic changed while the check ran (live broker)."""

    @property
    def healthy(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------------------------
# Pure rules


def continuity_problem(prev_last: int | None, base: int, compacted: bool) -> str | None:
    """What is wrong with a batch starting at ``base`` after one ending at ``prev_last``
    (None: the first batch, or nothing wrong)."""
    if prev_last is None:
        return None
    if base <= prev_last:
        return f"batch overlaps the previous batch (starts at {base}, previous ends at {prev_last})"
    if not compacted and base != prev_last + 1:
        return (
            f"gap of {base - prev_last - 1} offsets before this batch (previous ends at "
            f"{prev_last}) in a partition that is not compacted"
        )
    return None


def index_mismatches(entry: IndexEntry, header: records.BatchHeader, stored_size: int) -> list[str]:
    """Fields of the index entry that disagree with the batch it describes."""
    expected = {
        "last offset": header.last_offset,
        "max timestamp": header.max_timestamp,
        "size": stored_size,
        "producer id": header.producer_id,
        "producer epoch": header.producer_epoch,
        "base sequence": header.base_sequence,
        "records count": header.records_count,
        "attributes": header.attributes,
    }
    actual = {
        "last offset": entry.last_offset,
        "max timestamp": entry.max_timestamp,
        "size": entry.size,
        "producer id": entry.producer_id,
        "producer epoch": entry.producer_epoch,
        "base sequence": entry.base_sequence,
        "records count": entry.records_count,
        "attributes": entry.attributes,
    }
    return [
        f"index {name} {actual[name]} != batch {expected[name]}"
        for name in expected
        if actual[name] != expected[name]
    ]


def batch_problems(
    raw: bytes, key_offset: int, entry: IndexEntry | None, compacted: bool, deep: bool
) -> tuple[records.BatchHeader | None, list[str]]:
    """(parsed header or None, problems) of one stored batch and its index entry."""
    try:
        header = records.parse_header(raw)
    except records.InvalidRecordBatch as exc:
        return None, [f"batch header does not parse: {exc}"]
    found: list[str] = []
    if header.base_offset != key_offset:
        found.append(f"batch base offset {header.base_offset} differs from its key")
    if header.size != len(raw):
        found.append(f"batch length field says {header.size} bytes, {len(raw)} stored")
    elif not records.verify_crc(raw):
        found.append("CRC32C mismatch: the batch is corrupt")
    if (
        not compacted
        and not header.is_control
        and header.records_count > 0
        and header.last_offset_delta != header.records_count - 1
    ):
        found.append(
            f"last offset delta {header.last_offset_delta} with {header.records_count} records "
            "in a partition that is not compacted"
        )
    if entry is None:
        found.append("batch has no index entry")
    else:
        found.extend(index_mismatches(entry, header, len(raw)))
    if deep and not found:
        try:
            n = sum(1 for _ in records.iter_records(raw, MAX_UNCOMPRESSED))
        except records.InvalidRecordBatch as exc:
            found.append(f"records do not decode: {exc}")
        else:
            if n != header.records_count:
                found.append(f"{n} records decoded, header says {header.records_count}")
    return header, found


# --------------------------------------------------------------------------------------------
# Checking a store


def _merged(
    txn: ReadTxn, topic_id: uuid.UUID, p: int
) -> Iterator[tuple[int, bytes | None, bytes | None]]:
    """(base offset, batch or None, index value or None) in offset order."""
    blo = keys.partition_prefix(keys.BATCH, topic_id, p)
    ilo = keys.partition_prefix(keys.INDEX, topic_id, p)
    batches = iter(txn.scan(blo, keys.prefix_end(blo)))
    index = iter(txn.scan(ilo, keys.prefix_end(ilo)))
    b = next(batches, None)
    i = next(index, None)
    while b is not None or i is not None:
        bo = keys.offset_of(b[0]) if b is not None else None
        io = keys.offset_of(i[0]) if i is not None else None
        if bo is not None and (io is None or bo < io):
            assert b is not None
            yield bo, b[1], None
            b = next(batches, None)
        elif io is not None and (bo is None or io < bo):
            assert i is not None
            yield io, None, i[1]
            i = next(index, None)
        else:
            assert b is not None and i is not None and bo is not None
            yield bo, b[1], i[1]
            b = next(batches, None)
            i = next(index, None)


class _Checker:
    def __init__(self, inspector: Inspector, deep: bool, progress: Progress | None) -> None:
        self.ins = inspector
        self.deep = deep
        self.progress = progress
        self.problems: list[Problem] = [Problem(m) for m in inspector.metadata_problems]
        if inspector.recorded_engine != inspector.engine:
            self.problems.append(
                Problem(
                    f"the store records engine {inspector.recorded_engine} but holds "
                    f"{inspector.engine} files"
                )
            )
        self.batches = 0
        self.bytes = 0
        self.total = 0
        self.skipped = 0
        self.partitions = 0

    def run(self) -> CheckResult:
        topics = self.ins.partitions_of(None)
        if self.progress is not None:
            with self.ins.store.read() as txn:
                for topic in topics:
                    lo = keys.topic_prefix(keys.INDEX, topic.topic_id)
                    for _key, value in txn.scan(lo, keys.prefix_end(lo)):
                        if len(value) == keys.INDEX_VALUE.size:
                            self.total += keys.INDEX_VALUE.unpack(value)[2]
            self.progress(0, self.total)
        for topic in topics:
            # The topic's overrides over Kafka's defaults: the broker's defaults are in its
            # server.properties, which the store does not hold.
            config = parse_topic_config({}, topic.configs)
            for ignored in config.ignored:
                self.problems.append(Problem(f"config {ignored}", topic.name))
            for p in range(topic.partitions):
                with self.ins.store.read() as txn:
                    self._partition(txn, topic, p, config.compacts)
        with self.ins.store.read() as txn:
            self._orphans(txn)
            self._global(txn)
        return CheckResult(self.problems, self.partitions, self.batches, self.bytes, self.skipped)

    def _changed(self, txn: ReadTxn) -> bool:
        """True when the metadata log grew since the image was read (a live broker)."""
        return txn.get(keys.metadata_key(self.ins.image.next_offset)) is not None

    def _partition(self, txn: ReadTxn, topic: TopicImage, p: int, compacts: bool) -> None:
        def problem(message: str, offset: int | None = None) -> None:
            self.problems.append(Problem(message, topic.name, p, offset))

        tid = topic.topic_id
        raw_state = txn.get(keys.partition_state_key(tid, p))
        if raw_state is None or len(raw_state) != keys.PARTITION_STATE.size:
            if self._changed(txn):
                self.skipped += 1
                return
            problem("partition state key is missing or malformed")
            start = end = None
        else:
            start, end = (int(v) for v in keys.PARTITION_STATE.unpack(raw_state))
            hw = end  # one node: the high watermark is the log end offset
            if not 0 <= start <= hw <= end:
                problem(f"log start {start} <= high watermark {hw} <= log end {end} does not hold")
        self.partitions += 1
        compacted = compacts or (txn.get(keys.cleaner_checkpoint_key(tid, p)) is not None)
        prev_last: int | None = None
        first: tuple[int, int] | None = None  # (base, last) of the first batch
        for offset, batch, index in _merged(txn, tid, p):
            entry: IndexEntry | None = None
            if index is not None:
                if len(index) != keys.INDEX_VALUE.size:
                    problem(f"index entry of {len(index)} bytes", offset)
                else:
                    entry = IndexEntry.decode(offset, index)
            if batch is None:
                problem("index entry without a batch", offset)
                if entry is None:
                    continue
                base, last = offset, entry.last_offset
            else:
                self.batches += 1
                self.bytes += len(batch)
                if self.progress is not None:
                    self.progress(self.bytes, self.total)
                header, found = batch_problems(batch, offset, entry, compacted, self.deep)
                for message in found:
                    problem(message, offset)
                if header is None:
                    continue
                base, last = offset, header.last_offset
            gap = continuity_problem(prev_last, base, compacted)
            if gap is not None:
                problem(gap, base)
            if end is not None and last >= end:
                problem(f"batch ends at {last}, at or beyond the log end {end}", base)
            if first is None:
                first = (base, last)
            prev_last = last if prev_last is None else max(prev_last, last)
        if start is None or end is None:
            pass
        elif first is None:
            if start != end:
                problem(f"no batch, but log start {start} != log end {end}")
        else:
            if first[1] < start:
                problem(f"first batch lies wholly below the log start {start}", first[0])
            if not compacted and first[0] > start:
                problem(
                    f"first batch starts at {first[0]}, after the log start {start}: "
                    "offsets missing",
                    first[0],
                )
            if prev_last is not None and prev_last + 1 != end:
                problem(f"last batch ends at {prev_last}, but the log end is {end}")
        lo = keys.partition_prefix(keys.PRODUCER, tid, p)
        for key, value in txn.scan(lo, keys.prefix_end(lo)):
            try:
                ProducerEntry.decode(value)
            except (struct.error, ValueError) as exc:
                problem(f"producer {keys.offset_of(key)} state does not decode: {exc}")

    def _orphans(self, txn: ReadTxn) -> None:
        image, _problems = load_image(txn)  # current metadata: topics may have changed
        for prefix in keys.TOPIC_DATA_PREFIXES:
            cursor = prefix
            hi = keys.prefix_end(prefix)
            for _ in range(1_000_000):  # bounded: one seek per partition range
                found = next(iter(txn.scan(cursor, hi, limit=1)), None)
                if found is None:
                    break
                key = found[0]
                if len(key) < 1 + _TP.size:
                    self.problems.append(
                        Problem(f"malformed key {key.hex()} under 0x{prefix.hex()}")
                    )
                    cursor = key + b"\x00"
                    continue
                tid_bytes, p = _TP.unpack_from(key, 1)
                tid = uuid.UUID(bytes=tid_bytes)
                topic = image.by_id.get(tid)
                if topic is None:
                    self.problems.append(
                        Problem(f"keys under 0x{prefix.hex()} for unknown topic id {tid}", None, p)
                    )
                elif not 0 <= p < topic.partitions:
                    self.problems.append(
                        Problem(
                            f"keys under 0x{prefix.hex()} for a partition beyond the topic's "
                            f"{topic.partitions}",
                            topic.name,
                            p,
                        )
                    )
                cursor = keys.prefix_end(keys.partition_prefix(prefix, tid, p))

    def _global(self, txn: ReadTxn) -> None:
        lo = keys.BROKER_CONFIG
        for key, value in txn.scan(lo, keys.prefix_end(lo)):
            try:
                resource = keys.decode_broker_config_key(key)
                if resource and not resource.isdigit():
                    raise ValueError(f"resource {resource!r} is not a node id")
                keys.decode_broker_configs(value)
            except (ValueError, UnicodeDecodeError, struct.error) as exc:
                self.problems.append(Problem(f"dynamic broker config key {key.hex()}: {exc}"))
        lo = keys.GROUP_OFFSET
        for key, value in txn.scan(lo, keys.prefix_end(lo)):
            try:
                group, topic, p = keys.decode_group_offset_key(key)
            except (struct.error, UnicodeDecodeError):
                self.problems.append(Problem(f"malformed group offset key {key.hex()}"))
                continue
            if len(value) < keys.GROUP_OFFSET_VALUE.size:
                self.problems.append(
                    Problem(f"group {group!r}: committed offset of {len(value)} bytes", topic, p)
                )


def check(
    inspector: Inspector, *, deep: bool = False, progress: Progress | None = None
) -> CheckResult:
    """Check every partition of ``inspector``'s store by the rules in the module docstring."""
    return _Checker(inspector, deep, progress).run()


def check_store(path: str | os.PathLike[str], *, deep: bool = False) -> list[str]:
    """The problems of the data directory at ``path``, one line each; empty when healthy.

    A directory that cannot be inspected at all (missing, no store, refused format, a LevelDB
    store still locked by a broker) gives one problem saying why.
    """
    try:
        with Inspector(path) as inspector:
            result = check(inspector, deep=deep)
    except InspectError as exc:
        return [f"cannot inspect: {exc}"]
    return [str(p) for p in result.problems]
