"""The storage key schema (format version 1): every key the broker writes, built in one place.

OWNS: byte layouts of keys and of the small fixed-width values beside them.
MUST NOT KNOW: how keys are stored (any ordered KV backend), trio, sockets.

All integers are big-endian and fixed width, so byte order is numeric order. Data keys carry
the topic id (a UUID's 16 bytes), never the name, so a deleted and recreated topic never
collides with its old data.

| prefix | key (tid = topic id, 16 bytes; p = partition, be32) | value                         |
|--------|------------------------------------------------------|-------------------------------|
| 0x00   | 0x00 "format"                                        | format version, be32          |
| 0x00   | 0x00 "cluster_id"                                    | cluster id, ascii             |
| 0x00   | 0x00 "next_producer_id"                              | next producer id, be64        |
| 0x00   | 0x00 "engine"                                        | storage engine, ascii         |
| 0x01   | 0x01 offset be64                                     | metadata record (JSON)        |
| 0x02   | 0x02 tid p base_offset be64                          | record batch v2, as stored    |
| 0x03   | 0x03 tid p base_offset be64                          | batch index entry (INDEX)     |
| 0x04   | 0x04 tid p                                           | partition state               |
| 0x05   | 0x05 tid p producer_id be64                          | producer state                |
| 0x06   | 0x06 tid p epoch be32                                | epoch start offset, be64      |
| 0x07   | 0x07 glen be16 group utf-8 tlen be16 topic utf-8 p   | committed offset (OFFSET)     |
| 0x08   | 0x08 tid p                                           | cleaner checkpoint (CLEANER)  |
| 0x09   | 0x09 nlen be16 resource utf-8                        | dynamic broker configs (JSON) |

INDEX value: last_offset q, max_timestamp q, size i, producer_id q, producer_epoch h,
base_sequence i, records_count i, attributes h (struct ">qqiqhiih").
OFFSET value (committed by a consumer group; Kafka commits by topic name, so the key holds the
name, length-prefixed): offset q, leader_epoch i, commit_timestamp_ms q, has_metadata B (struct
">qiqB"), then the metadata string in utf-8 (absent when has_metadata is 0, i.e. null).
PARTITION_STATE value: log_start_offset q, log_end_offset q (struct ">qq"); on a single node the
high watermark equals the log end offset, which only moves after the commit holding it.
ENGINE value: the engine that created the store ("lmdb", "leveldb" or "memory"), written with the
format key; a store without it predates the record and was written by LMDB.
CLEANER_CHECKPOINT value: first_dirty_offset q, earliest_delete_horizon q (struct ">qq"; -1 =
no tombstone horizon pending). Written by the log cleaner in the commit of a pass's last slice;
absent until a compacted partition completes its first pass (the cleaner then treats the whole
log as dirty).
BROKER_CONFIG (KIP-226 dynamic broker configs, written by AlterConfigs and
IncrementalAlterConfigs through the group-commit writer): the resource is "" (cluster-wide
default) or a node id in decimal; the value is a JSON object of broker key -> value, the whole
set of that resource (a resource with no dynamic config has no key). An optional key older code
ignores, so the format version stays 1.
"""

from __future__ import annotations

import json
import struct
import uuid
from typing import Final

FORMAT_VERSION: Final = 1

META: Final = b"\x00"
METADATA_LOG: Final = b"\x01"
BATCH: Final = b"\x02"
INDEX: Final = b"\x03"
PARTITION: Final = b"\x04"
PRODUCER: Final = b"\x05"
EPOCH: Final = b"\x06"
GROUP_OFFSET: Final = b"\x07"
CLEANER: Final = b"\x08"
BROKER_CONFIG: Final = b"\x09"
TOPIC_DATA_PREFIXES: Final = (BATCH, INDEX, PARTITION, PRODUCER, EPOCH, CLEANER)
"""Every prefix whose keys start with a topic id: what deleting a topic removes, and where the
offline check looks for keys of unknown topics."""

FORMAT_KEY: Final = META + b"format"
CLUSTER_ID_KEY: Final = META + b"cluster_id"
NEXT_PRODUCER_ID_KEY: Final = META + b"next_producer_id"
ENGINE_KEY: Final = META + b"engine"
ENGINE_BEFORE_RECORD: Final = "lmdb"
"""The engine of a store without an ENGINE_KEY (format version 1 stores from before it)."""

BE32: Final = struct.Struct(">i")
BE64: Final = struct.Struct(">q")
INDEX_VALUE: Final = struct.Struct(">qqiqhiih")
PARTITION_STATE: Final = struct.Struct(">qq")
CLEANER_CHECKPOINT: Final = struct.Struct(">qq")
GROUP_OFFSET_VALUE: Final = struct.Struct(">qiqB")
"""Head of a committed offset value (0x07): offset, leader epoch, commit timestamp ms, and 1
when UTF-8 metadata follows (0: no metadata, null on the wire)."""
_TP: Final = struct.Struct(">16si")
_TP_OFFSET: Final = struct.Struct(">16siq")


def metadata_key(offset: int) -> bytes:
    return METADATA_LOG + BE64.pack(offset)


def partition_prefix(prefix: bytes, topic_id: uuid.UUID, partition: int) -> bytes:
    """The key prefix of one partition's range under `prefix`."""
    return prefix + _TP.pack(topic_id.bytes, partition)


def key_at(partition_range: bytes, offset: int) -> bytes:
    """The key of ``offset`` in a partition's range (a :func:`partition_prefix`): equal to
    :func:`batch_key` / :func:`index_key` / :func:`producer_key` under that prefix, without
    encoding the topic id again (the partition log keeps its prefixes)."""
    return partition_range + BE64.pack(offset)


def topic_prefix(prefix: bytes, topic_id: uuid.UUID) -> bytes:
    return prefix + topic_id.bytes


def batch_key(topic_id: uuid.UUID, partition: int, base_offset: int) -> bytes:
    return BATCH + _TP_OFFSET.pack(topic_id.bytes, partition, base_offset)


def index_key(topic_id: uuid.UUID, partition: int, base_offset: int) -> bytes:
    return INDEX + _TP_OFFSET.pack(topic_id.bytes, partition, base_offset)


def offset_of(key: bytes) -> int:
    """The trailing be64 of a batch or index key."""
    (offset,) = BE64.unpack_from(key, len(key) - 8)
    return int(offset)


def partition_state_key(topic_id: uuid.UUID, partition: int) -> bytes:
    return PARTITION + _TP.pack(topic_id.bytes, partition)


def cleaner_checkpoint_key(topic_id: uuid.UUID, partition: int) -> bytes:
    return CLEANER + _TP.pack(topic_id.bytes, partition)


def producer_key(topic_id: uuid.UUID, partition: int, producer_id: int) -> bytes:
    return PRODUCER + _TP_OFFSET.pack(topic_id.bytes, partition, producer_id)


def epoch_key(topic_id: uuid.UUID, partition: int, epoch: int) -> bytes:
    return EPOCH + _TP.pack(topic_id.bytes, partition) + BE32.pack(epoch)


_BE16: Final = struct.Struct(">H")


def _name(text: str) -> bytes:
    raw = text.encode()
    return _BE16.pack(len(raw)) + raw


def decode_format_version(raw: bytes) -> int:
    """The format version in a FORMAT_KEY value; ``ValueError`` naming both versions when this
    build cannot read it (newer or older), or when the value is not a version at all."""
    if len(raw) != BE32.size:
        raise ValueError(f"format version key of {len(raw)} bytes, not {BE32.size}")
    (version,) = BE32.unpack(raw)
    if version != FORMAT_VERSION:
        newer = "newer" if version > FORMAT_VERSION else "older"
        raise ValueError(
            f"the store has format version {version} ({newer}); this kvstream reads "
            f"format version {FORMAT_VERSION} only"
        )
    return int(version)


def broker_config_key(resource: str) -> bytes:
    """The 0x09 key of one BROKER config resource ("" = the cluster-wide default)."""
    return BROKER_CONFIG + _name(resource)


def decode_broker_config_key(key: bytes) -> str:
    """The resource name of a 0x09 key; ValueError when the key is not one."""
    if len(key) < 3 or key[:1] != BROKER_CONFIG:
        raise ValueError(f"not a broker config key: {key.hex()}")
    (length,) = _BE16.unpack_from(key, 1)
    if len(key) != 3 + length:
        raise ValueError(f"broker config key of {len(key)} bytes, name length {length}")
    return key[3:].decode()


def group_offset_prefix(group_id: str) -> bytes:
    """The key range of every committed offset of one group."""
    return GROUP_OFFSET + _name(group_id)


def group_offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return GROUP_OFFSET + _name(group_id) + _name(topic) + BE32.pack(partition)


def decode_group_offset_key(key: bytes) -> tuple[str, str, int]:
    """(group id, topic name, partition) of a 0x07 key."""
    (glen,) = _BE16.unpack_from(key, 1)
    group = key[3 : 3 + glen].decode()
    pos = 3 + glen
    (tlen,) = _BE16.unpack_from(key, pos)
    topic = key[pos + 2 : pos + 2 + tlen].decode()
    (partition,) = BE32.unpack_from(key, pos + 2 + tlen)
    return group, topic, int(partition)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (for half-open scans)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        raise ValueError("prefix of only 0xff bytes has no end")
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def encode_broker_configs(configs: dict[str, str]) -> bytes:
    """A 0x09 value: the JSON object of one resource's dynamic broker configs."""
    return json.dumps(configs, sort_keys=True, separators=(",", ":")).encode()


def decode_broker_configs(raw: bytes) -> dict[str, str]:
    """The configs in a 0x09 value; ValueError unless it is a JSON object of strings."""
    value = json.loads(raw)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("dynamic broker configs are not a JSON object of strings")
    return value
