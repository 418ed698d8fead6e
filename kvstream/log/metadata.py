"""Cluster metadata as a log: records, and the in-memory image they replay into.

OWNS: the metadata record types (JSON objects under the 0x01 keys) and `MetadataImage`, the
read model handlers consult (topics by name and id, partition counts, topic configs).
MUST NOT KNOW: trio, sockets, how records get committed (the writer does that).

Every change to topics is a record appended to the metadata log and applied to the image only
after the commit that holds it returned. On one node the log is a quorum of one; a replicated
cluster will ship the same records (KIP-595/KIP-631 style) and replay them the same way.

Record shapes (format version 1):
  {"type": "topic", "name": str, "id": uuid-hex, "partitions": int, "configs": {str: str}}
  {"type": "remove_topic", "id": uuid-hex}
  {"type": "topic_configs", "id": uuid-hex, "configs": {str: str}}   (replaces the overrides)
  {"type": "partitions", "id": uuid-hex, "count": int}   (grows the topic to `count` partitions)

`topic_configs` is written by AlterConfigs and IncrementalAlterConfigs (the whole override set
after the change, so replay needs no earlier record); `partitions` by CreatePartitions (counts
only ever grow; the new partitions' state keys are written in the same commit).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class MetadataImage:
    topics: dict[str, TopicImage] = field(default_factory=dict)
    by_id: dict[uuid.UUID, TopicImage] = field(default_factory=dict)
    next_offset: int = 0

    def apply(self, record: dict[str, Any]) -> None:
        kind = record["type"]
        if kind == "topic":
            topic = TopicImage(
                name=record["name"],
                topic_id=uuid.UUID(hex=record["id"]),
                partitions=int(record["partitions"]),
                configs=dict(record.get("configs", {})),
            )
            self.topics[topic.name] = topic
            self.by_id[topic.topic_id] = topic
        elif kind == "remove_topic":
            removed = self.by_id.pop(uuid.UUID(hex=record["id"]), None)
            if removed is not None:
                self.topics.pop(removed.name, None)
        elif kind == "topic_configs":
            target = self.by_id.get(uuid.UUID(hex=record["id"]))
            if target is not None:
                target.configs = dict(record["configs"])
        elif kind == "partitions":
            grown = self.by_id.get(uuid.UUID(hex=record["id"]))
            if grown is not None:
                grown.partitions = max(grown.partitions, int(record["count"]))
        else:
            raise ValueError(f"unknown metadata record type {kind!r}")
        self.next_offset += 1


def encode_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def decode_record(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("metadata record is not an object")
    return value


def topic_record(
    name: str, topic_id: uuid.UUID, partitions: int, configs: dict[str, str]
) -> dict[str, Any]:
    return {
        "type": "topic",
        "name": name,
        "id": topic_id.hex,
        "partitions": partitions,
        "configs": configs,
    }


def remove_topic_record(topic_id: uuid.UUID) -> dict[str, Any]:
    return {"type": "remove_topic", "id": topic_id.hex}


def topic_configs_record(topic_id: uuid.UUID, configs: dict[str, str]) -> dict[str, Any]:
    return {"type": "topic_configs", "id": topic_id.hex, "configs": dict(configs)}


def partitions_record(topic_id: uuid.UUID, count: int) -> dict[str, Any]:
    return {"type": "partitions", "id": topic_id.hex, "count": count}
