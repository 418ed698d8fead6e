"""Type stub for the C record walker built from _walk.c (see records._walk)."""

from typing_extensions import Buffer

def walk_records(buf: Buffer, p: int, end: int, count: int, max_delta: int, /) -> None: ...
