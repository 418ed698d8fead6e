"""Reading a kvstream data directory offline: opening it read-only and decoding what it holds.

OWNS: finding and opening the store of a data directory for reading (engine detection, the
format version check, the one-line errors for bad input), and turning its keys into plain
dataclasses: the store's figures, topics, partitions, decoded batches and records, committed
group offsets with their lag, and idempotent producer state.
MUST NOT KNOW: how anything is shown (tables, JSON: kvstream/inspect/render.py), argparse,
trio, sockets, the broker. It never writes to the store.

Snapshots are short on purpose: a running LMDB broker cannot reuse the pages a reader still
sees, so every call here reads inside its own ``store.read()`` block and copies values out,
and :meth:`Inspector.dump` reads a partition in chunks of batches, one snapshot per chunk
(batch keys are stable, so the next chunk continues after the last key of the previous one).
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from kvstream.log import keys
from kvstream.log.metadata import MetadataImage, TopicImage, decode_record
from kvstream.log.partition import IndexEntry, iter_index
from kvstream.log.producer_state import ProducerEntry
from kvstream.protocol import records
from kvstream.storage.base import KVStore, ReadTxn, StorageError, StoreLockedError
from kvstream.storage.open import detect_engine, open_store

DUMP_CHUNK_BATCHES: Final = 256
DUMP_CHUNK_BYTES: Final = 16 * 1024 * 1024
"""Batches (and bytes, at least one batch) read per snapshot by :meth:`Inspector.dump`."""

MAX_UNCOMPRESSED: Final = 64 * 1024 * 1024
"""Largest records section decoded from one batch (the broker's own bound)."""


_ALLOWED_CONTROLS: Final = str.maketrans("", "", "\t\n\r")
"""Control characters a text key or value may hold (removed before the printable test)."""


class InspectError(Exception):
    """Bad input or an unreadable store: one line for the user (the command exits with 2)."""


# --------------------------------------------------------------------------------------------
# Pure helpers


def text_or_base64(data: bytes) -> tuple[str, str]:
    """``("text", s)`` when ``data`` is UTF-8 whose characters are all printable (tab, newline
    and carriage return allowed), else ``("base64", standard base64 of data)``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64", base64.b64encode(data).decode("ascii")
    if text.isprintable() or text.translate(_ALLOWED_CONTROLS).isprintable():
        return "text", text
    return "base64", base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes shown to a person: as text when printable UTF-8, else base64 (``encoding`` says)."""

    encoding: str  # "text" or "base64"
    text: str

    @classmethod
    def of(cls, data: bytes | None) -> Data | None:
        if data is None:
            return None
        return cls(*text_or_base64(data))


# --------------------------------------------------------------------------------------------
# What is read


@dataclass(frozen=True, slots=True)
class StoreStat:
    path: str
    engine: str
    """The engine whose files are in the directory."""
    recorded_engine: str
    """The engine the store records (key 0x00 "engine"; "lmdb" for stores from before it)."""
    format_version: int
    cluster_id: str
    next_producer_id: int
    topics: int
    partitions: int
    groups: int
    metadata_records: int
    entries: int
    file_size: int
    """Bytes on disk: LMDB's data.mdb, else the sum of the files in the data directory."""
    used_pages: int | None
    page_size: int | None
    map_size: int | None
    storage: dict[str, int]
    """Every figure the backend reports (``KVStore.stats()``)."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: str
    partitions: int
    configs: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    log_start_offset: int
    high_watermark: int
    log_end_offset: int
    batches: int
    records: int
    """Records in the stored batches (a first batch may hold some below the log start)."""
    bytes: int
    first_timestamp: int | None
    """Timestamp of the first record at or after the log start (None: no record)."""
    last_timestamp: int | None
    """Timestamp of the last record (None: no record)."""
    max_timestamp: int | None
    """Largest batch max timestamp (what ListOffsets MAX_TIMESTAMP looks for)."""
    cleaner_first_dirty_offset: int | None
    """Where the log cleaner's last complete pass ended (compacted partitions only)."""


@dataclass(frozen=True, slots=True)
class HeaderDump:
    key: str
    value: Data | None


@dataclass(frozen=True, slots=True)
class RecordDump:
    offset: int
    timestamp: int
    key: Data | None
    value: Data | None
    headers: tuple[HeaderDump, ...]


@dataclass(frozen=True, slots=True)
class BatchDump:
    topic: str
    partition: int
    base_offset: int
    last_offset: int
    size: int
    records_count: int
    compression: str
    timestamp_type: str
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    partition_leader_epoch: int
    transactional: bool
    control: bool
    control_type: str | None
    """"commit" or "abort" for a transaction marker, else None."""
    delete_horizon: bool
    crc_ok: bool
    error: str | None
    """Why the records could not be decoded (None when they were)."""
    records: tuple[RecordDump, ...]
    """The records shown (``--from`` and ``--count`` may leave some of the batch out)."""


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group: str
    topics: int
    partitions: int
    lag: int | None
    """Sum of the known lags (None when no committed partition has a known high watermark)."""
    last_commit_ms: int


@dataclass(frozen=True, slots=True)
class GroupOffset:
    group: str
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int
    high_watermark: int | None
    """None when the topic or partition no longer exists."""
    lag: int | None


@dataclass(frozen=True, slots=True)
class ProducerBatch:
    first_sequence: int
    last_sequence: int
    first_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(frozen=True, slots=True)
class ProducerInfo:
    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_offset: int | None
    batches: tuple[ProducerBatch, ...] = field(default=())


# --------------------------------------------------------------------------------------------
# Opening


def decode_group_offset(raw: bytes) -> tuple[int, int, int, str | None]:
    """(offset, leader epoch, commit timestamp ms, metadata) of a 0x07 value."""
    offset, epoch, ts, has_meta = keys.GROUP_OFFSET_VALUE.unpack_from(raw)
    meta = raw[keys.GROUP_OFFSET_VALUE.size :].decode("utf-8", "replace") if has_meta else None
    return int(offset), int(epoch), int(ts), meta


def open_readonly(path: str | os.PathLike[str]) -> tuple[KVStore, str]:
    """Open the store in data directory ``path`` read-only; (store, engine name).

    Raises :class:`InspectError` with one line for a missing directory, a directory with no
    store, an engine this build cannot open, or a LevelDB store held by a running broker.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        raise InspectError(f"{where}: no such directory")
    if not os.path.isdir(where):
        raise InspectError(f"{where}: not a directory")
    try:
        engine = detect_engine(where)
    except StorageError as exc:
        raise InspectError(str(exc)) from None
    if engine is None:
        raise InspectError(
            f"{where}: not a kvstream data directory (no LMDB data.mdb, no LevelDB CURRENT)"
        )
    try:
        store = open_store(where, engine, readonly=True)
    except ValueError:
        raise InspectError(
            f"{where}: holds a {engine} store, which this kvstream cannot open "
            f"(no {engine} backend installed)"
        ) from None
    except StoreLockedError:
        raise InspectError(
            f"{where}: the {engine} store is locked by another process (a running broker?); "
            f"{engine} lets one process open a store at a time: stop the broker, then inspect"
        ) from None
    except StorageError as exc:
        raise InspectError(f"{where}: cannot open the {engine} store: {exc}") from None
    return store, engine


def _check_format(txn: ReadTxn, where: str) -> int:
    raw = txn.get(keys.FORMAT_KEY)
    if raw is None:
        raise InspectError(f"{where}: not a kvstream store (no format version key)")
    if len(raw) != keys.BE32.size:
        raise InspectError(
            f"{where}: not a kvstream store (format version key of {len(raw)} bytes)"
        )
    try:
        return keys.decode_format_version(raw)
    except ValueError as exc:
        raise InspectError(f"{where}: {exc}") from None


def load_image(txn: ReadTxn) -> tuple[MetadataImage, list[str]]:
    """Replay the metadata log; (image, problems). A record that does not decode is skipped
    and named in the problems."""
    image = MetadataImage()
    problems: list[str] = []
    lo = keys.METADATA_LOG
    for key, value in txn.scan(lo, keys.prefix_end(lo)):
        try:
            image.apply(decode_record(value))
        except (ValueError, KeyError, TypeError) as exc:
            image.next_offset += 1
            problems.append(f"metadata record at offset {keys.offset_of(key)} is invalid: {exc}")
    return image, problems


def _dir_size(path: str) -> int:
    total = 0
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def _control_name(value: int | None) -> str | None:
    if value is None:
        return None
    try:
        return records.ControlType(value).name.lower()
    except ValueError:
        return f"unknown({value})"


def _state(txn: ReadTxn, topic_id: uuid.UUID, partition: int) -> tuple[int, int] | None:
    raw = txn.get(keys.partition_state_key(topic_id, partition))
    if raw is None or len(raw) != keys.PARTITION_STATE.size:
        return None
    start, end = keys.PARTITION_STATE.unpack(raw)
    return int(start), int(end)


class Inspector:
    """One data directory opened read-only, with its metadata image replayed at open."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.store, self.engine = open_readonly(path)
        try:
            with self.store.read() as txn:
                self.format_version = _check_format(txn, self.path)
                self.image, self.metadata_problems = load_image(txn)
                self.cluster_id = (txn.get(keys.CLUSTER_ID_KEY) or b"").decode("utf-8", "replace")
                raw_engine = txn.get(keys.ENGINE_KEY)
                self.recorded_engine = (
                    raw_engine.decode("utf-8", "replace")
                    if raw_engine is not None
                    else keys.ENGINE_BEFORE_RECORD
                )
                raw_pid = txn.get(keys.NEXT_PRODUCER_ID_KEY)
                self.next_producer_id = (
                    int(keys.BE64.unpack(raw_pid)[0]) if raw_pid and len(raw_pid) == 8 else 0
                )
        except BaseException:
            self.store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups -------------------------------------------------------------------------------

    def topic(self, name: str) -> TopicImage:
        topic = self.image.topics.get(name)
        if topic is None:
            raise InspectError(f"unknown topic {name!r}")
        return topic

    def partitions_of(self, name: str | None, partition: int | None = None) -> list[TopicImage]:
        """Topics selected by ``name`` (all when None), sorted by name; checks ``partition``."""
        if name is None:
            return sorted(self.image.topics.values(), key=lambda t: t.name)
        topic = self.topic(name)
        if partition is not None and not 0 <= partition < topic.partitions:
            raise InspectError(
                f"topic {name!r} has no partition {partition} "
                f"(partitions 0..{topic.partitions - 1})"
            )
        return [topic]

    # -- stat, topics, partitions --------------------------------------------------------------

    def stat(self) -> StoreStat:
        stats = dict(self.store.stats())
        with self.store.read() as txn:
            groups = len(self._group_ids(txn))
        file_size = stats.get("file_size")
        return StoreStat(
            path=self.path,
            engine=self.engine,
            recorded_engine=self.recorded_engine,
            format_version=self.format_version,
            cluster_id=self.cluster_id,
            next_producer_id=self.next_producer_id,
            topics=len(self.image.topics),
            partitions=sum(t.partitions for t in self.image.topics.values()),
            groups=groups,
            metadata_records=self.image.next_offset,
            entries=stats.get("entries", 0),
            file_size=file_size if file_size is not None else _dir_size(self.path),
            used_pages=stats.get("used_pages"),
            page_size=stats.get("page_size"),
            map_size=stats.get("map_size"),
            storage=stats,
        )

    def topics(self) -> list[TopicInfo]:
        return [
            TopicInfo(t.name, str(t.topic_id), t.partitions, dict(sorted(t.configs.items())))
            for t in self.partitions_of(None)
        ]

    def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        out: list[PartitionInfo] = []
        for topic in self.partitions_of(name):
            for p in range(topic.partitions):
                with self.store.read() as txn:
                    out.append(self._partition_info(txn, topic, p))
        return out

    def _partition_info(self, txn: ReadTxn, topic: TopicImage, p: int) -> PartitionInfo:
        start, end = _state(txn, topic.topic_id, p) or (0, 0)
        count = size = n_records = 0
        max_ts: int | None = None
        first: IndexEntry | None = None
        last: IndexEntry | None = None
        for entry in iter_index(txn, topic.topic_id, p):
            if first is None:
                first = entry
            last = entry
            count += 1
            size += entry.size
            n_records += entry.records_count
            max_ts = entry.max_timestamp if max_ts is None else max(max_ts, entry.max_timestamp)
        first_ts = last_ts = None
        if first is not None:
            first_ts = self._record_timestamp(txn, topic.topic_id, p, first, start, last=False)
        if last is not None:
            last_ts = self._record_timestamp(txn, topic.topic_id, p, last, start, last=True)
        raw = txn.get(keys.cleaner_checkpoint_key(topic.topic_id, p))
        dirty = None
        if raw is not None and len(raw) == keys.CLEANER_CHECKPOINT.size:
            dirty = int(keys.CLEANER_CHECKPOINT.unpack(raw)[0])
        return PartitionInfo(
            topic=topic.name,
            partition=p,
            log_start_offset=start,
            high_watermark=end,  # one node: the high watermark is the log end offset
            log_end_offset=end,
            batches=count,
            records=n_records,
            bytes=size,
            first_timestamp=first_ts,
            last_timestamp=last_ts,
            max_timestamp=max_ts,
            cleaner_first_dirty_offset=dirty,
        )

    @staticmethod
    def _record_timestamp(
        txn: ReadTxn, topic_id: uuid.UUID, p: int, entry: IndexEntry, start: int, *, last: bool
    ) -> int | None:
        raw = txn.get(keys.batch_key(topic_id, p, entry.base_offset))
        if raw is None:
            return None
        try:
            found: int | None = None
            for rec in records.iter_records(raw, MAX_UNCOMPRESSED):
                if rec.offset < start:
                    continue
                found = rec.timestamp
                if not last:
                    break
            return found
        except records.InvalidRecordBatch:
            return None

    # -- dump ----------------------------------------------------------------------------------

    def dump(
        self,
        name: str,
        partition: int | None = None,
        from_offset: int | None = None,
        count: int | None = None,
    ) -> Iterator[BatchDump]:
        """Batches of ``name`` (one partition, or every partition in turn) with their records.

        Starts at the batch holding ``from_offset`` (default: the log start; never below it)
        and shows at most ``count`` records per partition. A batch whose records do not decode
        is still yielded, with ``error`` set and the records that decoded before the fault.
        """
        topic = self.partitions_of(name, partition)[0]
        selected = [partition] if partition is not None else list(range(topic.partitions))
        for p in selected:
            yield from self._dump_partition(topic, p, from_offset, count)

    def _dump_partition(
        self, topic: TopicImage, p: int, from_offset: int | None, count: int | None
    ) -> Iterator[BatchDump]:
        lo = keys.partition_prefix(keys.BATCH, topic.topic_id, p)
        hi = keys.prefix_end(lo)
        with self.store.read() as txn:
            start, _end = _state(txn, topic.topic_id, p) or (0, 0)
            first = max(start, from_offset) if from_offset is not None else start
            floor = txn.floor(keys.batch_key(topic.topic_id, p, first), lo)
            cursor = floor[0] if floor is not None else lo
        left = count
        while left is None or left > 0:
            chunk: list[bytes] = []
            size = 0
            with self.store.read() as txn:
                for key, value in txn.scan(cursor, hi, limit=DUMP_CHUNK_BATCHES):
                    chunk.append(value)
                    cursor = key + b"\x00"
                    size += len(value)
                    if size >= DUMP_CHUNK_BYTES:
                        break
            for raw in chunk:
                batch = decode_batch(topic.name, p, raw, first, left)
                if 0 <= batch.last_offset < first:
                    continue  # wholly below the start (a floor batch ending before it)
                if left is not None:
                    left -= len(batch.records)
                yield batch
                if left is not None and left <= 0:
                    return
            if not chunk or (len(chunk) < DUMP_CHUNK_BATCHES and size < DUMP_CHUNK_BYTES):
                return

    # -- groups --------------------------------------------------------------------------------

    @staticmethod
    def _group_ids(txn: ReadTxn) -> list[str]:
        ids: list[str] = []
        lo = keys.GROUP_OFFSET
        hi = keys.prefix_end(lo)
        cursor = lo
        while True:  # one seek per group, not one step per committed partition
            found = next(iter(txn.scan(cursor, hi, limit=1)), None)
            if found is None:
                return ids
            group = keys.decode_group_offset_key(found[0])[0]
            ids.append(group)
            cursor = keys.prefix_end(keys.group_offset_prefix(group))

    def _hw(self, txn: ReadTxn, topic: str, partition: int) -> int | None:
        image = self.image.topics.get(topic)
        if image is None or not 0 <= partition < image.partitions:
            return None
        state = _state(txn, image.topic_id, partition)
        return state[1] if state is not None else None

    def _offsets(self, txn: ReadTxn, group: str) -> list[GroupOffset]:
        lo = keys.group_offset_prefix(group)
        out: list[GroupOffset] = []
        for key, value in txn.scan(lo, keys.prefix_end(lo)):
            _g, topic, partition = keys.decode_group_offset_key(key)
            offset, epoch, ts, meta = decode_group_offset(value)
            hw = self._hw(txn, topic, partition)
            lag = hw - offset if hw is not None else None
            out.append(GroupOffset(group, topic, partition, offset, epoch, meta, ts, hw, lag))
        out.sort(key=lambda o: (o.topic, o.partition))
        return out

    def groups(self) -> list[GroupSummary]:
        out: list[GroupSummary] = []
        with self.store.read() as txn:
            for group in self._group_ids(txn):
                offsets = self._offsets(txn, group)
                lags = [o.lag for o in offsets if o.lag is not None]
                out.append(
                    GroupSummary(
                        group=group,
                        topics=len({o.topic for o in offsets}),
                        partitions=len(offsets),
                        lag=sum(lags) if lags else None,
                        last_commit_ms=max((o.commit_timestamp_ms for o in offsets), default=-1),
                    )
                )
        return out

    def offsets(self, group: str) -> list[GroupOffset]:
        with self.store.read() as txn:
            found = self._offsets(txn, group)
        if not found:
            raise InspectError(f"unknown group {group!r} (no committed offsets)")
        return found

    # -- producers -----------------------------------------------------------------------------

    def producers(self, name: str, partition: int | None = None) -> list[ProducerInfo]:
        topic = self.partitions_of(name, partition)[0]
        selected = [partition] if partition is not None else list(range(topic.partitions))
        out: list[ProducerInfo] = []
        with self.store.read() as txn:
            for p in selected:
                lo = keys.partition_prefix(keys.PRODUCER, topic.topic_id, p)
                for key, value in txn.scan(lo, keys.prefix_end(lo)):
                    entry = ProducerEntry.decode(value)
                    batches = tuple(
                        ProducerBatch(
                            b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp
                        )
                        for b in entry.batches
                    )
                    out.append(
                        ProducerInfo(
                            topic=topic.name,
                            partition=p,
                            producer_id=keys.offset_of(key),
                            producer_epoch=entry.epoch,
                            last_sequence=entry.last_seq,
                            last_offset=batches[-1].last_offset if batches else None,
                            batches=batches,
                        )
                    )
        return out


_HEADER_NUMBERS: Final = (
    "base_offset",
    "last_offset",
    "base_timestamp",
    "max_timestamp",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "partition_leader_epoch",
)


def decode_batch(
    topic: str, partition: int, raw: bytes, from_offset: int = 0, count: int | None = None
) -> BatchDump:
    """One stored batch decoded; records below ``from_offset`` left out, at most ``count``."""
    try:
        h = records.parse_header(raw)
    except records.InvalidRecordBatch as exc:
        unknown = dict.fromkeys(_HEADER_NUMBERS, -1)
        return BatchDump(
            topic=topic,
            partition=partition,
            size=len(raw),
            records_count=0,
            compression="unknown",
            timestamp_type="unknown",
            transactional=False,
            control=False,
            control_type=None,
            delete_horizon=False,
            crc_ok=False,
            error=f"batch header does not parse: {exc}",
            records=(),
            **unknown,
        )
    shown: list[RecordDump] = []
    error: str | None = None
    control: int | None = None
    try:
        for rec in records.iter_records(raw, MAX_UNCOMPRESSED):
            if h.is_control and control is None and rec.key is not None and len(rec.key) >= 4:
                control = int.from_bytes(rec.key[2:4], "big", signed=True)
            if rec.offset < from_offset:
                continue
            if count is not None and len(shown) >= count:
                break
            shown.append(
                RecordDump(
                    rec.offset,
                    rec.timestamp,
                    Data.of(rec.key),
                    Data.of(rec.value),
                    tuple(HeaderDump(hd.key, Data.of(hd.value)) for hd in rec.headers),
                )
            )
    except records.InvalidRecordBatch as exc:
        error = str(exc)
    return BatchDump(
        topic=topic,
        partition=partition,
        base_offset=h.base_offset,
        last_offset=h.last_offset,
        size=len(raw),
        records_count=h.records_count,
        compression=h.compression.name.lower(),
        timestamp_type=h.timestamp_type.name.lower(),
        base_timestamp=h.base_timestamp,
        max_timestamp=h.max_timestamp,
        producer_id=h.producer_id,
        producer_epoch=h.producer_epoch,
        base_sequence=h.base_sequence,
        partition_leader_epoch=h.partition_leader_epoch,
        transactional=h.is_transactional,
        control=h.is_control,
        control_type=_control_name(control),
        delete_horizon=h.has_delete_horizon,
        crc_ok=records.verify_crc(raw),
        error=error,
        records=tuple(shown),
    )
