"""Writers for the protocol's primitive encodings, shared by the hand-written response bodies.

OWNS: unsigned varints (read and written), array lengths and strings in their classic (int32 /
int16 length) and compact (length + 1 as an unsigned varint, KIP-482) forms, appended to a
bytearray.
MUST NOT KNOW: any message's layout (produce_request, produce_response, fetch_response, the
codec's header reader and tagged.py own theirs).
"""

from __future__ import annotations

import struct
from typing import Final

_I32: Final = struct.Struct(">i")
_I16: Final = struct.Struct(">h")


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
