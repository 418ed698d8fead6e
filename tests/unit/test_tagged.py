"""Skipping unknown tagged fields (kvstream.protocol.tagged).

A "newer client" is simulated with kio itself: every flexible kio dataclass of a request is
copied into a "future" dataclass of the same name and shape with extra tagged fields kio does
not know, and kio's own `entity_writer` encodes a sample request through those future classes.
kio's `entity_reader` must then refuse the bytes (KeyError), and after stripping decode exactly
the original request.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import struct
import uuid
from datetime import timedelta
from io import BytesIO
from types import UnionType
from typing import Any, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    is_optional,
)
from kio.static.primitive import i16, i32, i32Timedelta, i64Timedelta

from kvstream.protocol.tagged import strip_unknown_tagged_fields

FLEXIBLE = [
    ("ApiVersions v3", 18, 3),
    ("Metadata v12", 3, 12),
    ("Produce v9", 0, 9),
    ("Fetch v12", 1, 12),
    ("Fetch v17", 1, 17),
    ("CreateTopics v7", 19, 7),
    ("InitProducerId v4", 22, 4),
    ("DescribeConfigs v4", 32, 4),
    ("FindCoordinator v4", 10, 4),
    ("DescribeTopicPartitions v0", 75, 0),  # cursor: a nullable struct (KIP-893 marker)
]
NON_FLEXIBLE = [
    ("Metadata v4", 3, 4),
    ("Produce v7", 0, 7),
    ("Fetch v11", 1, 11),
    ("CreateTopics v4", 19, 4),
    ("FindCoordinator v2", 10, 2),
]

# Tags no kio schema declares: one-byte and multi-byte varints. Their values are a string and
# an int32, as a newer Kafka would add them.
UNKNOWN_STRING_TAG = 77
UNKNOWN_INT_TAG = 300
UNKNOWN_FIELDS = ("zz_future_note", "zz_future_count")


# -- sample requests -----------------------------------------------------------------------------


def _primitive(kafka_type: str, seed: int) -> Any:
    match kafka_type:
        case "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32" | "uint64":
            return 3 + seed
        case "float64":
            return 1.5 + seed
        case "bool":
            return True
        case "uuid":
            return uuid.UUID(int=0x1234_5678 + seed)
        case "string":
            return f"value-{seed}"
        case "bytes" | "records":
            return bytes([seed % 256, 0, 255]) * 3
        case "timedelta_i32":
            return i32Timedelta.parse(timedelta(milliseconds=1500 + seed))
        case "timedelta_i64":
            return i64Timedelta.parse(timedelta(milliseconds=2500 + seed))
    raise AssertionError(f"add a sample value for {kafka_type}")


def sample(cls: type[Any], nulls: bool = False, seed: int = 0) -> Any:
    """An instance of `cls` with a non-default value in every field, tagged ones included
    (so known tags are on the wire), and two items in every array. With `nulls`, every
    nullable non-tagged field is None instead."""
    values: dict[str, Any] = {}
    for n, field in enumerate(dataclasses.fields(cls)):
        kind = classify_field(field)
        tagged = get_field_tag(field) is not None
        if nulls and not tagged and is_optional(field):
            values[field.name] = None
        elif isinstance(kind, EntityTupleField):
            values[field.name] = tuple(sample(kind.type_, nulls, seed + n + i) for i in (1, 2))
        elif isinstance(kind, EntityField):
            values[field.name] = sample(kind.type_, nulls, seed + n)
        elif isinstance(kind, PrimitiveTupleField):
            kafka_type = field.metadata["kafka_type"]
            values[field.name] = tuple(_primitive(kafka_type, seed + n + i) for i in (1, 2))
        else:
            values[field.name] = _primitive(field.metadata["kafka_type"], seed + n)
    return cls(**values)


def encode(cls: type[Any], value: Any) -> bytes:
    buffer = BytesIO()
    entity_writer(cls)(buffer, value)
    return buffer.getvalue()


def decode(cls: type[Any], data: bytes, offset: int = 0) -> tuple[Any, int]:
    value, size = entity_reader(cls)(data, offset)
    return value, size


# -- "future" classes: the same schema plus tagged fields kio does not know ----------------------


class Future:
    """Future twins of kio dataclasses. `where` picks the entities that get unknown fields:
    "top" (the class given to `encode`), "nested" (every entity below it) or "everywhere"."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._twins: dict[tuple[type[Any], bool], type[Any]] = {}

    def _extra(self, top: bool) -> bool:
        return self.where == "everywhere" or (self.where == "top") == top

    def twin(self, cls: type[Any], top: bool = True) -> type[Any]:
        key = (cls, top)
        if key not in self._twins:
            self._twins[key] = self._build(cls, top)
        return self._twins[key]

    def _remap(self, tp: Any) -> Any:
        if get_origin(tp) is UnionType:
            return functools.reduce(operator.or_, [self._remap(a) for a in get_args(tp)])
        if get_origin(tp) is tuple:
            inner, _ellipsis = get_args(tp)
            return tuple[self._remap(inner), ...]  # type: ignore[misc]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.twin(tp, top=False)
        return tp

    def _build(self, cls: type[Any], top: bool) -> type[Any]:
        specs: list[tuple[str, Any, Any]] = []
        for field in dataclasses.fields(cls):
            kwargs: dict[str, Any] = {"metadata": field.metadata}
            if field.default is not dataclasses.MISSING:
                kwargs["default"] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                kwargs["default_factory"] = field.default_factory
            specs.append((field.name, self._remap(field.type), dataclasses.field(**kwargs)))
        if cls.__flexible__ and self._extra(top):
            note, count = UNKNOWN_FIELDS
            meta_note = {"kafka_type": "string", "tag": UNKNOWN_STRING_TAG}
            meta_count = {"kafka_type": "int32", "tag": UNKNOWN_INT_TAG}
            specs.append((note, str, dataclasses.field(default="", metadata=meta_note)))
            specs.append((count, int, dataclasses.field(default=0, metadata=meta_count)))
        return dataclasses.make_dataclass(
            cls.__name__,  # kio special-cases an entity named RequestHeader
            specs,
            namespace={"__flexible__": cls.__flexible__},
            frozen=True,
            slots=True,
            kw_only=True,
        )

    def convert(self, value: Any, top: bool = True) -> Any:
        """`value` (a kio instance) as an instance of its twin, unknown fields set."""
        if isinstance(value, tuple):
            return tuple(self.convert(v, top=False) for v in value)
        if not (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            return value
        cls = self.twin(type(value), top)
        values = {
            f.name: self.convert(getattr(value, f.name), top=False)
            for f in dataclasses.fields(value)
        }
        names = {f.name for f in dataclasses.fields(cls)}
        if UNKNOWN_FIELDS[0] in names:
            values[UNKNOWN_FIELDS[0]] = "sent by a newer client"
            values[UNKNOWN_FIELDS[1]] = 42
        return cls(**values)

    def encode(self, cls: type[Any], value: Any) -> bytes:
        return encode(self.twin(cls), self.convert(value))


def has_nested_flexible_entity(cls: type[Any]) -> bool:
    for field in dataclasses.fields(cls):
        kind = classify_field(field)
        if isinstance(kind, EntityField | EntityTupleField) and kind.type_.__flexible__:
            return True
    return False


# -- flexible requests with unknown tags ---------------------------------------------------------


def _stripping_cases() -> list[Any]:
    """(name, key, version, nulls, where) for every combination that puts unknown tags on the
    wire: "nested" needs a nested flexible entity present (not null, not an empty array)."""
    cases = []
    for name, key, version in FLEXIBLE:
        cls = load_request_schema(key, version)
        for nulls in (False, True):
            original = sample(cls, nulls=nulls)
            for where in ("top", "nested", "everywhere"):
                if where == "nested" and Future(where).encode(cls, original) == encode(
                    cls, original
                ):
                    continue
                label = f"{name}-{'nulls' if nulls else 'values'}-{where}"
                cases.append(pytest.param(name, key, version, nulls, where, id=label))
    return cases


@pytest.mark.parametrize(("name", "key", "version", "nulls", "where"), _stripping_cases())
def test_unknown_tags_are_stripped(
    name: str, key: int, version: int, nulls: bool, where: str
) -> None:
    cls = load_request_schema(key, version)
    assert cls.__flexible__
    original = sample(cls, nulls=nulls)
    plain = encode(cls, original)
    assert decode(cls, plain) == (original, len(plain))

    future = Future(where).encode(cls, original)
    assert len(future) > len(plain)
    with pytest.raises(KeyError, match="Unknown tagged field tag"):
        decode(cls, future)

    stripped, consumed = strip_unknown_tagged_fields(future, cls)
    assert consumed == len(future)
    assert stripped == plain  # the unknown fields and nothing else are gone
    assert decode(cls, stripped) == (original, len(plain))


@pytest.mark.parametrize(("name", "key", "version"), FLEXIBLE, ids=[n for n, _, _ in FLEXIBLE])
def test_without_unknown_tags_the_bytes_are_unchanged(name: str, key: int, version: int) -> None:
    cls = load_request_schema(key, version)
    for original in (sample(cls), sample(cls, nulls=True)):
        plain = encode(cls, original)
        assert strip_unknown_tagged_fields(plain, cls) == (plain, len(plain))


def test_known_tags_are_kept() -> None:
    """Fetch v17 on the wire carries its known tags cluster_id (0) and replica_state (1)."""
    cls = load_request_schema(1, 17)
    original = sample(cls)
    assert original.cluster_id is not None
    assert original.replica_state.replica_id != -1
    stripped, _ = strip_unknown_tagged_fields(Future("everywhere").encode(cls, original), cls)
    assert decode(cls, stripped)[0] == original


def test_unknown_tags_inside_a_known_tagged_entity() -> None:
    """Fetch v17's replica_state is itself a tagged field: a newer ReplicaState inside it has
    its unknown tags stripped and the size of tag 1 rewritten."""
    cls = load_request_schema(1, 17)
    replica_state_cls = type(sample(cls).replica_state)
    future = Future("nested")
    original = sample(cls)
    wire = future.encode(cls, original)
    inner = encode(
        future.twin(replica_state_cls, top=False), future.convert(original.replica_state, top=False)
    )
    assert inner in wire  # the newer ReplicaState travels inside tag 1
    stripped, consumed = strip_unknown_tagged_fields(wire, cls)
    assert consumed == len(wire)
    assert decode(cls, stripped)[0] == original


@pytest.mark.parametrize(
    ("name", "key", "version"), NON_FLEXIBLE, ids=[n for n, _, _ in NON_FLEXIBLE]
)
def test_non_flexible_entities_pass_through(name: str, key: int, version: int) -> None:
    cls = load_request_schema(key, version)
    assert not cls.__flexible__
    for original in (sample(cls), sample(cls, nulls=True)):
        plain = encode(cls, original)
        assert strip_unknown_tagged_fields(plain, cls) == (plain, len(plain))
        # Trailing bytes (the next entity) are not consumed.
        assert strip_unknown_tagged_fields(plain + b"\x01\x02", cls) == (plain, len(plain))


# -- request headers -----------------------------------------------------------------------------


HEADER = RequestHeaderV2(
    request_api_key=i16(1), request_api_version=i16(17), correlation_id=i32(7), client_id="rdkafka"
)


@pytest.mark.parametrize("client_id", ["rdkafka", "", None])
def test_request_header_v2_with_an_unknown_tag(client_id: str | None) -> None:
    header = dataclasses.replace(HEADER, client_id=client_id)
    plain = encode(RequestHeaderV2, header)
    future = Future("top").encode(RequestHeaderV2, header)
    # client_id is an int16-length string even in this flexible header.
    length = -1 if client_id is None else len(client_id)
    assert future[8:10] == struct.pack(">h", length)
    with pytest.raises(KeyError):
        decode(RequestHeaderV2, future)
    assert strip_unknown_tagged_fields(future, RequestHeaderV2) == (plain, len(future))
    assert strip_unknown_tagged_fields(plain, RequestHeaderV2) == (plain, len(plain))


def test_request_header_v1_passes_through() -> None:
    header = RequestHeaderV1(
        request_api_key=i16(3), request_api_version=i16(4), correlation_id=i32(1), client_id=None
    )
    plain = encode(RequestHeaderV1, header)
    assert strip_unknown_tagged_fields(plain + b"body", RequestHeaderV1) == (plain, len(plain))


def test_a_whole_frame_header_then_body() -> None:
    """What the codec does after a KeyError: strip the header, then the body after it."""
    cls = load_request_schema(1, 17)
    original = sample(cls)
    future = Future("everywhere")
    frame = future.encode(RequestHeaderV2, HEADER) + future.encode(cls, original)
    header_bytes, header_used = strip_unknown_tagged_fields(frame, RequestHeaderV2)
    body_bytes, body_used = strip_unknown_tagged_fields(frame, cls, header_used)
    assert header_used + body_used == len(frame)
    clean = header_bytes + body_bytes
    header, header_size = decode(RequestHeaderV2, clean)
    body, body_size = decode(cls, clean, header_size)
    assert (header, body) == (HEADER, original)
    assert header_size + body_size == len(clean)
    # A memoryview of the frame works the same.
    view = memoryview(frame).toreadonly()
    assert strip_unknown_tagged_fields(view, cls, header_used) == (body_bytes, body_used)


# -- malformed input -----------------------------------------------------------------------------

FIND_COORDINATOR = load_request_schema(10, 4)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\x00", "truncated"),  # key_type and no keys array
        (b"\x00\x01", "truncated"),  # no keys, no tagged-field count
        (b"\x00\x01\x80\x80\x80\x80\x80\x01", "longer than 5"),  # six-byte varint count
        (b"\x00\x02\x00\x00", "null"),  # one key: a null string where a string is required
        (b"\x00\x03\x01", "items"),  # two keys announced, one byte left
        (b"\x00\x02\x05ab", "past the end"),  # a string of 4 bytes with 2 there
        (b"\x00\x01\x02\x4d\x09abc", "past the end"),  # tag 77 of 9 bytes with 3 there
        (b"\x00\x01\x02\x4d\x00", "truncated"),  # count 2, one tag given
        (b"\x00\xff\xff\xff\x0f", "items"),  # an array of 2**32 - 2 keys in 4 bytes
    ],
)
def test_malformed_input_is_a_value_error(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        strip_unknown_tagged_fields(data, FIND_COORDINATOR)


def test_negative_legacy_lengths_are_value_errors() -> None:
    metadata_v4 = load_request_schema(3, 4)
    with pytest.raises(ValueError, match="array length -2"):
        strip_unknown_tagged_fields(b"\xff\xff\xff\xfe\x01", metadata_v4)
    # A null topics array is fine there (nullable), a null key in FindCoordinator v2 is not.
    assert strip_unknown_tagged_fields(b"\xff\xff\xff\xff\x01", metadata_v4)[1] == 5
    with pytest.raises(ValueError, match="length -1"):
        strip_unknown_tagged_fields(b"\xff\xff\x00", load_request_schema(10, 2))
    header = struct.pack(">hhih", 3, 4, 1, -2)
    with pytest.raises(ValueError, match="length -2"):
        strip_unknown_tagged_fields(header + b"\x00", RequestHeaderV2)


def test_a_known_tag_whose_size_disagrees_with_its_value() -> None:
    fetch_v17 = load_request_schema(1, 17)
    wire = bytearray(encode(fetch_v17, sample(fetch_v17)))
    replica_state = encode(type(sample(fetch_v17).replica_state), sample(fetch_v17).replica_state)
    at = bytes(wire).index(b"\x01" + bytes([len(replica_state)]) + replica_state)
    wire[at + 1] += 1  # claim one byte more than ReplicaState takes
    wire[at + 2 + len(replica_state) : at + 2 + len(replica_state)] = b"\x00"
    with pytest.raises(ValueError, match="tagged field 1"):
        strip_unknown_tagged_fields(bytes(wire), fetch_v17)


def test_offset_outside_data() -> None:
    with pytest.raises(ValueError, match="offset"):
        strip_unknown_tagged_fields(b"\x00", FIND_COORDINATOR, 2)


# -- fuzz: malformed input raises ValueError and nothing else ------------------------------------


def _wires() -> list[tuple[type[Any], bytes]]:
    out: list[tuple[type[Any], bytes]] = []
    for _, key, version in FLEXIBLE + NON_FLEXIBLE:
        cls = load_request_schema(key, version)
        for nulls in (False, True):
            out.append((cls, Future("everywhere").encode(cls, sample(cls, nulls=nulls))))
    out.append((RequestHeaderV2, Future("top").encode(RequestHeaderV2, HEADER)))
    return out


WIRES = _wires()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _strip_or_value_error(data: bytes, cls: type[Any]) -> None:
    try:
        stripped, consumed = strip_unknown_tagged_fields(data, cls)
    except ValueError:
        return
    assert 0 <= consumed <= len(data)
    assert len(stripped) <= consumed


@FUZZ
@given(st.sampled_from(WIRES), st.data())
def test_truncation_raises_only_value_error(wire: tuple[type[Any], bytes], data: Any) -> None:
    cls, encoded = wire
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ValueError):
        strip_unknown_tagged_fields(encoded[:cut], cls)


@FUZZ
@given(
    st.sampled_from(WIRES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_corruption_raises_only_value_error(
    wire: tuple[type[Any], bytes], edits: list[tuple[int, int]]
) -> None:
    cls, encoded = wire
    corrupt = bytearray(encoded)
    for at, byte in edits:
        corrupt[at % len(corrupt)] = byte
    _strip_or_value_error(bytes(corrupt), cls)


@FUZZ
@given(st.sampled_from([cls for cls, _ in WIRES]), st.binary(max_size=200))
def test_random_bytes_raise_only_value_error(cls: type[Any], data: bytes) -> None:
    _strip_or_value_error(data, cls)


def test_none_of_the_samples_is_trivial() -> None:
    """Guard for the fuzz tests: every flexible wire really carries unknown tags."""
    for cls, encoded in WIRES:
        if cls.__flexible__:
            with pytest.raises(KeyError):
                decode(cls, encoded)
