"""Skipping unknown tagged fields (KIP-482), which kio's native decoder refuses.

OWNS: walking one encoded kio entity (a request header or a request body) with the field
metadata of its kio dataclass, and re-encoding it without the tagged fields that dataclass does
not declare, at every level: the entity itself, nested entities, arrays of entities, and entities
inside known tagged fields. The Kafka protocol says a reader must skip tagged fields it does not
know; kio 0.6.5 raises ``KeyError('Unknown tagged field tag: N')`` instead, so a client newer
than our kio schema would otherwise lose its connection. The codec calls
:func:`strip_unknown_tagged_fields` on the header and then on the body after such a KeyError,
and decodes the result once more.

MUST NOT KNOW: sockets, trio, or what any API does. It is a pure function over bytes.

The walk mirrors kio's reader field for field (``kio/serial/_introspect.py`` and the native
schema compiler), so that what it keeps is exactly what kio will read:

* a flexible entity uses compact encodings (uvarint length + 1, 0 meaning null) for strings,
  bytes, records and arrays; a non-flexible one uses int16 (strings) or int32 (bytes, records,
  arrays) lengths, -1 meaning null;
* ``client_id`` of an entity named ``RequestHeader`` is always a nullable int16-length string,
  even in the flexible header v2;
* a nullable nested entity (``X | None``) starts with an int8 marker, -1 meaning null (KIP-893);
  kio reads that marker for tagged entity fields too;
* a tagged field is never nullable on the wire (kio drops the optionality of tagged fields),
  except that tagged nullable entities keep their marker as above;
* the tagged-field section of a flexible entity is: uvarint count, then per field uvarint tag,
  uvarint size and ``size`` bytes.

Known tagged fields are kept byte for byte; only those that hold entities are walked (so unknown
tags inside them go too), and their payload must then be exactly ``size`` bytes. Unknown tagged
fields are dropped whole and the count is rewritten. Nothing else is re-encoded: when no unknown
tag is found, the output equals the input slice. Malformed input (truncated data, a varint over
five bytes, a length past the end, a negative or null length where none is allowed, more array
items than bytes left) raises ``ValueError`` and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)

from kvstream.protocol.primitives import read_uvarint, write_uvarint

__all__ = ["strip_unknown_tagged_fields"]

# Fixed-width kio types and their size on the wire. kio accepts `X | None` only for the two
# whose null has an in-band encoding (the zero UUID, timestamp -1).
_FIXED_SIZE: Final[dict[str, int]] = {
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "float64": 8,
    "bool": 1,
    "uuid": 16,
    "error_code": 2,
    "timedelta_i32": 4,
    "timedelta_i64": 8,
    "datetime_i64": 8,
}
_FIXED_NULLABLE: Final = frozenset({"uuid", "datetime_i64"})


@dataclass(frozen=True, slots=True)
class _Fixed:
    size: int


@dataclass(frozen=True, slots=True)
class _Compact:
    """Compact string, bytes or records: uvarint length + 1, 0 for null."""

    nullable: bool


@dataclass(frozen=True, slots=True)
class _Legacy:
    """int16-length string (width 2) or int32-length bytes/records (width 4), -1 for null."""

    width: int
    nullable: bool


@dataclass(frozen=True, slots=True)
class _Array:
    item: _Node
    compact: bool


@dataclass(frozen=True, slots=True)
class _Struct:
    entity_type: type[Any]
    nullable: bool


_Node: TypeAlias = _Fixed | _Compact | _Legacy | _Array | _Struct


@dataclass(frozen=True, slots=True)
class _Plan:
    flexible: bool
    fields: tuple[_Node, ...]
    # Declared tags: None to keep the payload as is, a node to walk it (it holds entities).
    tagged: dict[int, _Node | None]


def _primitive(kafka_type: str, flexible: bool, optional: bool, where: str) -> _Node:
    size = _FIXED_SIZE.get(kafka_type)
    if size is not None and (not optional or kafka_type in _FIXED_NULLABLE):
        return _Fixed(size)
    if kafka_type == "string":
        return _Compact(optional) if flexible else _Legacy(2, optional)
    if kafka_type in ("bytes", "records"):
        return _Compact(optional) if flexible else _Legacy(4, optional)
    raise NotImplementedError(f"{where}: no wire format for {kafka_type!r} ({optional=})")


def _field_node(field: dataclasses.Field[Any], flexible: bool, header: bool, tagged: bool) -> _Node:
    if header and field.name == "client_id":
        # Kafka's RequestHeader.json: client_id keeps the legacy encoding in header v2.
        return _Legacy(2, nullable=True)
    kind = classify_field(field)
    inner: _Node
    if isinstance(kind, PrimitiveField):
        optional = is_optional(field) and not tagged
        inner = _primitive(get_schema_field_type(field), flexible, optional, field.name)
    elif isinstance(kind, PrimitiveTupleField):
        # The array may be null; its items never are.
        inner = _primitive(get_schema_field_type(field), flexible, False, field.name)
    elif isinstance(kind, EntityField):
        inner = _Struct(kind.type_, nullable=is_optional(field))
    elif isinstance(kind, EntityTupleField):
        inner = _Struct(kind.type_, nullable=False)
    else:  # pragma: no cover - classify_field returns one of the four
        raise NotImplementedError(f"{field.name}: unknown field class {kind!r}")
    return _Array(inner, compact=flexible) if kind.is_array else inner


def _holds_entity(node: _Node) -> bool:
    if isinstance(node, _Array):
        return _holds_entity(node.item)
    return isinstance(node, _Struct)


_PLANS: dict[type[Any], _Plan] = {}


def _plan(entity_type: type[Any]) -> _Plan:
    plan = _PLANS.get(entity_type)
    if plan is None:
        plan = _PLANS[entity_type] = _compile(entity_type)
    return plan


def _compile(entity_type: type[Any]) -> _Plan:
    flexible = bool(entity_type.__flexible__)
    header = entity_type.__name__ == "RequestHeader"
    regular: list[_Node] = []
    tagged: dict[int, _Node | None] = {}
    for field in dataclasses.fields(entity_type):
        tag = get_field_tag(field)
        node = _field_node(field, flexible, header, tagged=tag is not None)
        if tag is None:
            regular.append(node)
        else:
            tagged[int(tag)] = node if _holds_entity(node) else None
    return _Plan(flexible, tuple(regular), tagged)


def _uvarint_bytes(value: int) -> bytes:
    out = bytearray()
    write_uvarint(out, value)
    return bytes(out)


class _Walk:
    """A cursor over data[start:end] that copies the input lazily to `out`.

    Positions are absolute indexes into `data`. Bytes from `mark` on have not been copied yet;
    `replace` copies up to a span, writes its replacement and skips the span.
    """

    __slots__ = ("changed", "data", "end", "mark", "out")

    def __init__(self, data: memoryview, start: int, end: int) -> None:
        self.data = data
        self.end = end
        self.mark = start
        self.out = bytearray()
        self.changed = False

    def need(self, pos: int, size: int) -> int:
        """End position of `size` bytes at `pos`, or ValueError if they are not all there."""
        stop = pos + size
        if size < 0 or stop > self.end:
            raise ValueError(f"truncated: {size} bytes at offset {pos} run past the end {self.end}")
        return stop

    def uvarint(self, pos: int) -> tuple[int, int]:
        return read_uvarint(self.data, pos, self.end)

    def signed(self, pos: int, width: int) -> tuple[int, int]:
        stop = self.need(pos, width)
        return int.from_bytes(self.data[pos:stop], "big", signed=True), stop

    def count(self, pos: int, count: int) -> None:
        # Kafka's generated readers refuse an item count larger than the bytes left; so do we,
        # so that a forged count cannot make us loop over items of no size.
        if count > self.end - pos:
            raise ValueError(f"{count} items at offset {pos} but {self.end - pos} bytes left")

    def replace(self, start: int, stop: int, replacement: bytes | bytearray) -> None:
        self.out += self.data[self.mark : start]
        self.out += replacement
        self.mark = stop
        self.changed = True

    def finish(self, stop: int) -> bytes:
        self.out += self.data[self.mark : stop]
        self.mark = stop
        return bytes(self.out)


def _walk(w: _Walk, node: _Node, pos: int) -> int:
    """Walk one value of `node` at `pos`; return the position after it."""
    if isinstance(node, _Fixed):
        return w.need(pos, node.size)
    if isinstance(node, _Compact):
        length, pos = w.uvarint(pos)
        if length == 0:
            if not node.nullable:
                raise ValueError(f"null at offset {pos} where a string or bytes is required")
            return pos
        return w.need(pos, length - 1)
    if isinstance(node, _Legacy):
        length, pos = w.signed(pos, node.width)
        if length == -1 and node.nullable:
            return pos
        if length < 0:
            raise ValueError(f"length {length} before offset {pos}")
        return w.need(pos, length)
    if isinstance(node, _Array):
        if node.compact:
            items, pos = w.uvarint(pos)
            if items == 0:  # null array: kio accepts it whatever the field's type says
                return pos
            items -= 1
        else:
            items, pos = w.signed(pos, 4)
            if items == -1:
                return pos
            if items < 0:
                raise ValueError(f"array length {items} before offset {pos}")
        w.count(pos, items)
        item = node.item
        if isinstance(item, _Fixed):
            return w.need(pos, items * item.size)
        for _ in range(items):
            pos = _walk(w, item, pos)
        return pos
    if node.nullable:
        marker, pos = w.signed(pos, 1)
        if marker == -1:
            return pos
    return _walk_entity(w, _plan(node.entity_type), pos)


def _walk_entity(w: _Walk, plan: _Plan, pos: int) -> int:
    for node in plan.fields:
        pos = _walk(w, node, pos)
    if not plan.flexible:
        return pos

    count_start = pos
    count, pos = w.uvarint(pos)
    count_stop = pos
    w.count(pos, count)
    # (tag, start of the tag, start of its size, start of its payload, end of its payload)
    spans: list[tuple[int, int, int, int, int]] = []
    for _ in range(count):
        start = pos
        tag, size_start = w.uvarint(pos)
        size, payload = w.uvarint(size_start)
        pos = w.need(payload, size)
        spans.append((tag, start, size_start, payload, pos))

    known = plan.tagged
    kept = sum(1 for span in spans if span[0] in known)
    if kept != count:
        w.replace(count_start, count_stop, _uvarint_bytes(kept))
    for tag, start, size_start, payload, stop in spans:
        if tag not in known:
            w.replace(start, stop, b"")
            continue
        value_node = known[tag]
        if value_node is None:
            continue
        inner = _Walk(w.data, payload, stop)
        end = _walk(inner, value_node, payload)
        if end != stop:
            raise ValueError(
                f"tagged field {tag} has {stop - payload} bytes, reads {end - payload}"
            )
        if inner.changed:
            value = inner.finish(stop)
            w.replace(size_start, stop, _uvarint_bytes(len(value)) + value)
    return pos


def strip_unknown_tagged_fields(
    data: bytes | bytearray | memoryview, entity_type: type[Any], offset: int = 0
) -> tuple[bytes, int]:
    """Re-encode the entity starting at `offset` in `data` with every tagged field that
    `entity_type` (a kio dataclass) does not declare removed (recursively, in nested entities
    and arrays of entities).

    Returns (new_bytes_for_that_entity, bytes_consumed_from_data). Raises ValueError on
    malformed input (truncated, bad varint, lengths past the end). A non-flexible entity, or
    one without unknown tags, comes back unchanged.
    """
    view = memoryview(data).cast("B")
    if not 0 <= offset <= len(view):
        raise ValueError(f"offset {offset} outside the {len(view)} bytes of data")
    walk = _Walk(view, offset, len(view))
    stop = _walk_entity(walk, _plan(entity_type), offset)
    return walk.finish(stop), stop - offset


def check_layout(
    data: bytes | bytearray | memoryview, entity_type: type[Any], offset: int = 0
) -> int:
    """Walk the entity at `offset` without copying it; return the bytes it takes.

    Raises ValueError where the bytes cannot be this entity: a length or item count larger than
    the bytes left, a bad varint, a truncation. The broker runs it before kio's native reader,
    which trusts array counts and sizes its allocation by them (a forged count of a few bytes
    made it abort the whole process on a failed allocation of 170 GB).
    """
    view = memoryview(data).cast("B")
    if not 0 <= offset <= len(view):
        raise ValueError(f"offset {offset} outside the {len(view)} bytes of data")
    return _walk_entity(_Walk(view, offset, len(view)), _plan(entity_type), offset) - offset
