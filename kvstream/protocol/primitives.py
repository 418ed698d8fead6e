"""The protocol's primitive encodings, shared by the hand-written request readers and response
writers.

OWNS: unsigned varints (read and written), array lengths and strings in their classic (int32 /
int16 length) and compact (length + 1 as an unsigned varint, KIP-482) forms, appended to a
bytearray, and `BodyReader`, which reads them (and fixed-width integers, tagged-field sections)
from a request body with every length checked first.
MUST NOT KNOW: any message's layout (produce_request, fetch_request, produce_response,
fetch_response, the codec's header reader and tagged.py own theirs).
"""

from __future__ import annotations

import struct
from typing import Final

_I8: Final = struct.Struct(">b")
_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")


MAX_VARINT_BYTES: Final = 5  # an unsigned 32-bit value


def read_uvarint(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the unsigned varint at ``data[pos]``, not reading at or
    past ``end``; ValueError when it is truncated or longer than five bytes."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise ValueError(f"truncated varint at offset {pos}")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError(f"varint at offset {pos} is longer than {MAX_VARINT_BYTES} bytes")


def write_uvarint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def write_length(out: bytearray, n: int, flexible: bool) -> None:
    """An array's item count (or a bytes field's size): int32, or compact n + 1."""
    if flexible:
        if 0 <= n < 0x7F:  # the compact n + 1 fits one byte
            out.append(n + 1)
        else:
            write_uvarint(out, n + 1)
    else:
        out += _I32.pack(n)


def write_string(out: bytearray, value: str | None, flexible: bool) -> None:
    """A (nullable) string: int16 length, or compact length + 1; null is -1 / 0."""
    if value is None:
        if flexible:
            out.append(0)
        else:
            out += _I16.pack(-1)
        return
    raw = value.encode("utf-8")
    if flexible:
        write_uvarint(out, len(raw) + 1)
    else:
        out += _I16.pack(len(raw))
    out += raw


class BodyReader:
    """Reads a request body's fields from ``view[pos:]``, checking every length and count
    against the bytes left before using it; ValueError when the body is malformed."""

    __slots__ = ("flexible", "pos", "view")

    def __init__(self, view: memoryview, pos: int, flexible: bool) -> None:
        self.view = view
        self.pos = pos
        self.flexible = flexible

    def _need(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.view):
            raise ValueError(f"{n} bytes needed at {start}, frame has {len(self.view)}")
        self.pos = start + n
        return start

    def int8(self) -> int:
        return int(_I8.unpack_from(self.view, self._need(1))[0])

    def int16(self) -> int:
        return int(_I16.unpack_from(self.view, self._need(2))[0])

    def int32(self) -> int:
        return int(_I32.unpack_from(self.view, self._need(4))[0])

    def int64(self) -> int:
        return int(_I64.unpack_from(self.view, self._need(8))[0])

    def fields(self, layout: struct.Struct) -> tuple[int, ...]:
        """Several fixed-width fields at once (``layout`` is big-endian, integers only)."""
        return layout.unpack_from(self.view, self._need(layout.size))

    def raw(self, n: int) -> memoryview:
        start = self._need(n)
        return self.view[start : start + n]

    def uvarint(self) -> int:
        view, pos = self.view, self.pos
        if pos < len(view) and view[pos] < 0x80:  # one byte: counts, tags, short lengths
            self.pos = pos + 1
            return int(view[pos])
        value, self.pos = read_uvarint(view, pos, len(view))
        return value

    def string(self, nullable: bool) -> str | None:
        n = self.uvarint() - 1 if self.flexible else self.int16()
        if n == -1 and nullable:
            return None
        if n < 0:
            raise ValueError(f"string length {n}")
        start = self._need(n)
        try:
            return str(self.view[start : start + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"string is not UTF-8: {exc}") from None

    def records(self) -> memoryview | None:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        if n == -1:
            return None
        if n < 0:
            raise ValueError(f"records length {n}")
        start = self._need(n)
        return self.view[start : start + n]

    def count(self, min_item: int) -> int:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        if n < 0:
            raise ValueError(f"array length {n} where null is not allowed")
        if n * min_item > len(self.view) - self.pos:
            left = len(self.view) - self.pos
            raise ValueError(f"array of {n} items does not fit the {left} bytes left")
        return n

    def skip_tags(self) -> None:
        """A tagged-field section: a plain uvarint count, then (tag, size, size bytes) each."""
        if not self.flexible:
            return
        view, pos = self.view, self.pos
        if pos < len(view) and view[pos] == 0:  # no tagged fields: the usual case
            self.pos = pos + 1
            return
        fields = self.uvarint()
        if fields * 2 > len(self.view) - self.pos:
            raise ValueError(f"{fields} tagged fields do not fit the bytes left")
        for _ in range(fields):
            self.uvarint()  # tag
            self._need(self.uvarint())
