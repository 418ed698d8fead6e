"""Kafka request/response codec: framing, headers and message bodies, as bytes in and out.

OWNS: splitting a byte stream into size-prefixed frames (the size bound is checked before any
allocation), decoding request headers v0-v2 and bodies through kio, encoding responses with
header v0/v1 as a list of chunks for one scatter/gather write, and the ApiVersions exceptions
(an unknown ApiVersions version is answered in the v0 layout; its response header never has
tagged fields).

MUST NOT KNOW: sockets, trio, storage, or what any API does. Like h11, it turns bytes into
events and responses into bytes; the server decides what to do with them.

Two kinds of failure, as in h11: `ProtocolError` means the peer misbehaved and the connection
must be closed; `UnsupportedRequest` carries a decoded header so the caller may answer with an
error code where the protocol allows it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Final

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from kvstream.protocol.tagged import check_layout, strip_unknown_tagged_fields

FRAME_SIZE: Final = struct.Struct(">i")
_PEEK: Final = struct.Struct(">hhi")
API_VERSIONS_KEY: Final = 18
_SMALL_WRITE: Final = 4096


class ProtocolError(Exception):
    """The peer sent bytes that cannot be a Kafka request: close the connection."""


class UnsupportedRequest(Exception):
    """A well-framed request whose API key or version we do not serve."""

    def __init__(self, api_key: int, api_version: int, correlation_id: int, reason: str) -> None:
        super().__init__(reason)
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


LARGE_FRAME: Final = 64 * 1024


class FrameReader:
    """Accumulates received bytes and yields complete frames (without the size prefix).

    Small frames are cut out of a receive buffer fed with `feed`. A frame of LARGE_FRAME bytes
    or more gets a buffer of its own as soon as its size prefix is known: the I/O layer asks
    `receive_buffer()` for the unfilled rest and receives straight into it (no intermediate
    copies, no fresh allocation per frame: the buffer is reused once the frame was handed
    out, so a frame must be decoded before the next call to `next_frame`).
    """

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._big: bytearray | None = None
        self._big_size = 0
        self._big_filled = 0
        self._spare: bytearray | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def receive_buffer(self) -> memoryview | None:
        """The unfilled part of the large frame being received, or None (then use feed)."""
        if self._big is None:
            return None
        return memoryview(self._big)[self._big_filled : self._big_size]

    def received_into(self, count: int) -> None:
        self._big_filled += count

    @property
    def buffered(self) -> int:
        return len(self._buf) + (self._big_filled if self._big is not None else 0)

    def next_frame(self) -> bytes | memoryview | None:
        """Return the next complete frame, None if more bytes are needed.

        Raises ProtocolError for a negative or oversized length prefix, before reading the body.
        """
        big = self._big
        if big is not None:
            if self._big_filled < self._big_size:
                return None
            self._big, self._spare = None, big
            return memoryview(big)[: self._big_size]
        buf = self._buf
        if len(buf) < 4:
            return None
        (size,) = FRAME_SIZE.unpack_from(buf, 0)
        if size < 8 or size > self.max_frame_size:
            raise ProtocolError(f"frame size {size} outside [8, {self.max_frame_size}]")
        end = 4 + size
        if len(buf) < end:
            if size >= LARGE_FRAME:
                spare = self._spare
                big = spare if spare is not None and len(spare) >= size else bytearray(size)
                self._spare = None
                have = len(buf) - 4
                big[:have] = memoryview(buf)[4:]
                buf.clear()
                self._big, self._big_size, self._big_filled = big, size, have
            return None
        with memoryview(buf) as view:
            frame = bytes(view[4:end])
        del buf[:end]
        return frame


def peek_header(frame: bytes | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): the fields every header version starts with."""
    if len(frame) < 8:
        raise ProtocolError("frame shorter than a request header")
    key, version, correlation_id = _PEEK.unpack_from(frame, 0)
    return int(key), int(version), int(correlation_id)


@cache
def _request_codec(api_key: int, version: int) -> tuple[Any, Any, type[Any]]:
    request_type: type[Any] = load_request_schema(api_key, version)
    header_type = request_type.__header_schema__
    return entity_reader(header_type), entity_reader(request_type), request_type


def request_type(api_key: int, version: int) -> type[Any]:
    """The kio request dataclass for (api_key, version); raises KeyError-like kio errors."""
    return _request_codec(api_key, version)[2]


def decode_request(
    frame: bytes | memoryview, served: dict[int, tuple[int, int]]
) -> tuple[RequestHeader, Any]:
    """Decode one frame into (header, request body).

    `served` maps API key -> (min, max) versions this broker handles. Raises UnsupportedRequest
    for keys or versions outside it, ProtocolError for bytes that do not decode.
    """
    api_key, version, correlation_id = peek_header(frame)
    span = served.get(api_key)
    if span is None:
        raise UnsupportedRequest(api_key, version, correlation_id, f"unknown API key {api_key}")
    if not span[0] <= version <= span[1]:
        raise UnsupportedRequest(
            api_key, version, correlation_id, f"API {api_key} version {version} not served"
        )
    try:
        read_header, read_body, _ = _request_codec(api_key, version)
    except Exception as exc:  # kio has no schema for this version (e.g. Produce v0-2)
        raise UnsupportedRequest(api_key, version, correlation_id, str(exc)) from exc
    view = memoryview(frame).toreadonly()
    try:
        # Lengths and item counts are checked against the frame first: kio's native reader
        # sizes allocations by them and aborts the process when one fails (never trust it
        # with unchecked input).
        header_type = request_type(api_key, version).__header_schema__
        check_layout(view, request_type(api_key, version), check_layout(view, header_type))
    except ValueError as exc:
        raise ProtocolError(f"malformed API {api_key} v{version} request: {exc}") from exc
    try:
        # kio readers return (value, bytes consumed), not an end offset.
        header, header_size = read_header(view, 0)
        body, _ = read_body(view, header_size)
    except KeyError:
        # kio refuses tagged fields its schema does not declare; the protocol says to skip them.
        header, body, _ = _decode_without_unknown_tags(frame, api_key, version)
    except Exception as exc:
        # kio raises KeyError on unknown tagged fields, ValueError/IndexError/struct.error on
        # short or malformed input; all of them mean the peer sent something we cannot read.
        raise ProtocolError(f"cannot decode API {api_key} v{version}: {exc!r}") from exc
    # Bytes after the body are ignored, as Kafka's request parser does: librdkafka 2.16 sends
    # three extra bytes after an all-topics Metadata v12 body, and Kafka accepts it.
    return RequestHeader(api_key, version, correlation_id, header.client_id), body


def _decode_without_unknown_tags(
    frame: bytes | memoryview, api_key: int, version: int
) -> tuple[Any, Any, int]:
    """Decode again after kio's KeyError, with unknown tagged fields stripped (header first,
    then the body after it). Returns (header, body, bytes of `frame` consumed); any failure
    here is a ProtocolError.
    """
    read_header, read_body, request_cls = _request_codec(api_key, version)
    try:
        header_bytes, header_used = strip_unknown_tagged_fields(
            frame, request_cls.__header_schema__
        )
        body_bytes, body_used = strip_unknown_tagged_fields(frame, request_cls, header_used)
        clean = memoryview(header_bytes + body_bytes).toreadonly()
        header, header_size = read_header(clean, 0)
        body, body_size = read_body(clean, header_size)
    except Exception as exc:
        raise ProtocolError(f"cannot decode API {api_key} v{version}: {exc!r}") from exc
    if header_size + body_size != len(clean):
        raise ProtocolError(f"API {api_key} v{version}: stripped request not read whole")
    return header, body, header_used + body_used


class ChunkWriter:
    """A file-like sink for kio's writer that keeps large payloads as separate chunks.

    Small writes are coalesced; anything of _SMALL_WRITE bytes or more (record batches) is kept
    by reference, so a Fetch response is never copied into one big buffer.
    """

    __slots__ = ("_chunks", "_small", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes | bytearray | memoryview] = []
        self._small = bytearray()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if n >= _SMALL_WRITE:
            if self._small:
                self._chunks.append(self._small)
                self._small = bytearray()
            self._chunks.append(data)
        else:
            self._small += data
        self.size += n
        return n

    def chunks(self) -> list[bytes | bytearray | memoryview]:
        if self._small:
            self._chunks.append(self._small)
            self._small = bytearray()
        return self._chunks


@cache
def _response_codec(api_key: int, version: int) -> tuple[type[Any], Any, Any]:
    response_type: type[Any] = load_response_schema(api_key, version)
    header_type = response_type.__header_schema__
    return response_type, entity_writer(header_type), entity_writer(response_type)


def response_type(api_key: int, version: int) -> type[Any]:
    return _response_codec(api_key, version)[0]


def encode_response(
    api_key: int, version: int, correlation_id: int, response: Any
) -> list[bytes | bytearray | memoryview]:
    """Encode a response with its header and size prefix as chunks for one vectored write."""
    response_cls, write_header, write_body = _response_codec(api_key, version)
    out = ChunkWriter()
    out.write(b"\0\0\0\0")  # size placeholder, patched below
    header_cls = response_cls.__header_schema__
    write_header(out, header_cls(correlation_id=correlation_id))
    write_body(out, response)
    chunks = out.chunks()
    first = chunks[0]
    assert isinstance(first, bytearray)
    FRAME_SIZE.pack_into(first, 0, out.size - 4)
    return chunks


def encode_api_versions_fallback(
    correlation_id: int, error_code: int, apis: Iterable[tuple[int, int, int]]
) -> bytes:
    """ApiVersions response in the v0 layout, for a request version we do not know.

    Kafka answers an unsupported ApiVersions version this way so that any client can read the
    error and the supported range, then retry with a version both sides know (KIP-511).
    """
    items = sorted(apis)
    body = struct.pack(">ihi", correlation_id, error_code, len(items))
    body += b"".join(struct.pack(">hhh", k, lo, hi) for k, lo, hi in items)
    return FRAME_SIZE.pack(len(body)) + body


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    return names


def build(cls: type[Any], **values: Any) -> Any:
    """Instantiate a kio dataclass, dropping the fields its version does not have.

    Handlers describe a response once with every field any version has; each version's class
    keeps what it knows. Fields it needs and was not given keep kio's defaults (or raise).
    """
    names = _field_names(cls)
    return cls(**{k: v for k, v in values.items() if k in names})


def has_field(cls: type[Any], name: str) -> bool:
    return name in _field_names(cls)
