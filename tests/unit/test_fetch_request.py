"""kvstream.protocol.fetch_request against kio: the same fields from every Fetch version
(tagged cluster id, replica state and replica directory id set or not), malformed bodies and
every truncation refused."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_payload_module
from kio.static.constants import EntityType

from kvstream.protocol.codec import ProtocolError, decode_request
from kvstream.protocol.fetch_request import (
    FIRST_VERSION,
    LAST_VERSION,
    FetchRequestBody,
    read_fetch_body,
)
from tests.unit.test_codec import SERVED, _encode_request, fetch_as_kio

VERSIONS = range(FIRST_VERSION, LAST_VERSION + 1)

i32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
ids = st.uuids()
partitions = st.lists(st.tuples(i32, i32, i64, i32, i64, i32, st.none() | ids), max_size=4)
topics = st.lists(st.tuples(names, ids, partitions), max_size=4)
forgotten = st.lists(st.tuples(names, ids, st.lists(i32, max_size=4)), max_size=3)


def _kio_request(version: int, d: dict[str, Any]) -> Any:
    m = load_payload_module(1, version, EntityType.request)
    by_id = version >= 13

    def topic_key(name: str, topic_id: uuid.UUID) -> dict[str, Any]:
        return {"topic_id": topic_id} if by_id else {"topic": name}

    def partition(p: tuple[Any, ...]) -> Any:
        index, leader_epoch, offset, last_epoch, start, max_bytes, directory = p
        fields: dict[str, Any] = {
            "partition": index,
            "fetch_offset": offset,
            "partition_max_bytes": max_bytes,
        }
        if version >= 5:
            fields["log_start_offset"] = start
        if version >= 9:
            fields["current_leader_epoch"] = leader_epoch
        if version >= 12:
            fields["last_fetched_epoch"] = last_epoch
        if version >= 17:
            fields["replica_directory_id"] = directory
        return m.FetchPartition(**fields)

    fields: dict[str, Any] = {
        "max_wait": datetime.timedelta(milliseconds=d["wait_ms"]),
        "min_bytes": d["min_bytes"],
        "max_bytes": d["max_bytes"],
        "isolation_level": d["isolation"],
        "topics": tuple(
            m.FetchTopic(**topic_key(n, t), partitions=tuple(partition(p) for p in parts))
            for n, t, parts in d["topics"]
        ),
    }
    if version <= 14:
        fields["replica_id"] = d["replica_id"]
    else:
        fields["replica_state"] = m.ReplicaState(replica_id=d["replica_id"], replica_epoch=7)
    if version >= 7:
        fields["session_id"] = d["session_id"]
        fields["session_epoch"] = d["session_epoch"]
        fields["forgotten_topics_data"] = tuple(
            m.ForgottenTopic(**topic_key(n, t), partitions=tuple(ps)) for n, t, ps in d["forgotten"]
        )
    if version >= 11:
        fields["rack_id"] = d["rack"]
    if version >= 12:
        fields["cluster_id"] = d["cluster"]
    return m.FetchRequest(**fields)


requests = st.fixed_dictionaries(
    {
        "wait_ms": st.integers(min_value=0, max_value=2**31 - 1),
        "min_bytes": i32,
        "max_bytes": i32,
        "isolation": st.sampled_from([0, 1]),
        "replica_id": i32,
        "session_id": i32,
        "session_epoch": i32,
        "rack": names,
        "cluster": st.none() | names,
        "topics": topics,
        "forgotten": forgotten,
    }
)


@settings(max_examples=400, deadline=None)
@given(version=st.sampled_from(VERSIONS), d=requests)
def test_every_version_reads_what_kio_reads(version: int, d: dict[str, Any]) -> None:
    body = _kio_request(version, d)
    frame = _encode_request(body)
    header, ours = decode_request(frame, SERVED)
    assert isinstance(ours, FetchRequestBody)
    assert header.api_key == 1 and header.api_version == version
    assert fetch_as_kio(ours) == fetch_as_kio(body)


@pytest.mark.parametrize("version", [4, 7, 11, 12, 13, 17])
def test_every_truncation_is_a_protocol_error(version: int) -> None:
    d = {
        "wait_ms": 500,
        "min_bytes": 1,
        "max_bytes": 1 << 20,
        "isolation": 1,
        "replica_id": -1,
        "session_id": 0,
        "session_epoch": -1,
        "rack": "r1",
        "cluster": "c",
        "topics": [
            ("orders", uuid.UUID(int=5), [(0, 3, 42, 2, 0, 1 << 20, uuid.UUID(int=9))]),
            ("more", uuid.UUID(int=6), [(1, -1, 7, -1, -1, 1024, None)]),
        ],
        "forgotten": [("old", uuid.UUID(int=7), [0, 1])],
    }
    frame = _encode_request(_kio_request(version, d))
    decode_request(frame, SERVED)  # whole: reads
    header_end = len(frame) - len(_encode_request(_kio_request(version, d), client_id=None))
    for cut in range(max(header_end, 12), len(frame)):
        with pytest.raises(ProtocolError):
            decode_request(frame[:cut], SERVED)


@pytest.mark.parametrize(
    ("version", "body"),
    [
        *[(v, b"") for v in (4, 12, 13)],
        *[(v, b"\xff" * 40) for v in (4, 12, 13)],  # huge or negative counts everywhere
        # a topic count far beyond the frame: classic int32 (v4: after 17 bytes), compact
        # uvarint (v12: after 25 bytes)
        (4, b"\x00" * 17 + b"\x7f\xff\xff\xff"),
        (12, b"\x00" * 25 + b"\xff\xff\xff\xff\x07"),
        (12, b"\x00" * 25 + b"\x00"),  # a null topic array
        (13, b"\x00" * 25 + b"\x02" + b"\x00" * 10),  # a topic id cut short
    ],
)
def test_malformed_bodies_are_refused(version: int, body: bytes) -> None:
    with pytest.raises(ValueError):
        read_fetch_body(memoryview(body), 0, version)


def test_versions_outside_the_range_are_not_read_here() -> None:
    for version in (FIRST_VERSION - 1, LAST_VERSION + 1):
        with pytest.raises(ValueError):
            read_fetch_body(memoryview(b"\x00" * 64), 0, version)
