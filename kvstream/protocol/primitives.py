"""Writers for the protocol's primitive encodings, shared by the hand-written response bodies.

OWNS: unsigned varints, array lengths and strings in their classic (int32 / int16 length) and
compact (length + 1 as an unsigned varint, KIP-482) forms, appended to a bytearray.
MUST NOT KNOW: any message's layout (produce_response and fetch_response own theirs).
"""

from __future__ import annotations

import struct
from typing import Final

_I32: Final = struct.Struct(">i")
_I16: Final = struct.Struct(">h")


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
