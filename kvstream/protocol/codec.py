"""Kafka request/response codec: framing, headers and message bodies, as bytes in and out.

OWNS: splitting a byte stream into size-prefixed frames (the size bound is checked before any
allocation), decoding request headers v0-v2 and bodies through kio, encoding responses with
header v0/v1 as a list of chunks for one scatter/gather write, and the ApiVersions exceptions
(an unknown ApiVersions version is answered in the v0 layout; its response header never has
tagged fields).

Produce bodies (v3-12) are read by kvstream.protocol.produce_request instead of kio, so that
their records stay views of the frame (kio copies them), and Fetch bodies (v4-17) by
kvstream.protocol.fetch_request (a Fetch per few records is the most frequent request); their
request header (v1/v2) is read by hand here. Responses that subclass `OwnResponse` (Produce
and Fetch answers, produce_response and fetch_response) write their own bodies; the codec adds
the header.
Versions kio has no schema for are served through OWN_SCHEMAS: a hand-written body reader and
writer per (API key, version), whose requests decode into (and responses are built from) the
kio classes of a *model* version with the same fields, so a handler serves them like any other
version. DescribeLogDirs v0 (KIP-113; kafka-python 2.x's describe_log_dirs sends it) is one.

MUST NOT KNOW: sockets, trio, storage, or what any API does. Like h11, it turns bytes into
events and responses into bytes; the server decides what to do with them.

Two kinds of failure, as in h11: `ProtocolError` means the peer misbehaved and the connection
must be closed; `UnsupportedRequest` carries a decoded header so the caller may answer with an
error code where the protocol allows it.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import timedelta
from functools import cache
from typing import Any, Final

from kio.index import load_payload_module, load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from kvstream.protocol import fetch_request, produce_request
from kvstream.protocol.primitives import read_uvarint
from kvstream.protocol.tagged import check_layout, strip_unknown_tagged_fields

FRAME_SIZE: Final = struct.Struct(">i")
_PEEK: Final = struct.Struct(">hhi")
API_VERSIONS_KEY: Final = 18
PRODUCE_KEY: Final = 0
FETCH_KEY: Final = 1
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

    A chunk fed while nothing else is buffered is kept as it is, and the frames complete in it
    are handed out as views of it (``bytes`` are immutable, so such a view stays valid however
    long it is kept): a produce request that arrives in one read is not copied on its way to
    the handler. Only the incomplete tail of a chunk is copied, into a carry-over buffer that
    later chunks are appended to. A frame of LARGE_FRAME bytes or more gets a buffer of its own
    as soon as its size prefix is known: the I/O layer asks `receive_buffer()` for the unfilled
    rest and receives straight into it (no intermediate copies, no fresh allocation per frame:
    the buffer is reused once the frame was handed out, so a frame must be decoded before the
    next call to `next_frame`).
    """

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._chunk = b""  # a fed chunk not yet cut into frames (only while _buf is empty)
        self._pos = 0  # where its unconsumed part starts
        self._buf = bytearray()  # carried-over bytes of an incomplete frame
        self._big: bytearray | None = None
        self._big_size = 0
        self._big_filled = 0
        self._spare: bytearray | None = None

    def feed(self, data: bytes) -> None:
        if self._buf or self._pos < len(self._chunk):
            self._carry()
            self._buf += data
        else:
            self._chunk, self._pos = data, 0

    def _carry(self) -> None:
        """Move the unconsumed part of the kept chunk into the carry-over buffer."""
        if self._pos < len(self._chunk):
            self._buf += memoryview(self._chunk)[self._pos :]
        self._chunk, self._pos = b"", 0

    def receive_buffer(self) -> memoryview | None:
        """The unfilled part of the large frame being received, or None (then use feed)."""
        if self._big is None:
            return None
        return memoryview(self._big)[self._big_filled : self._big_size]

    def received_into(self, count: int) -> None:
        self._big_filled += count

    @property
    def buffered(self) -> int:
        big = self._big_filled if self._big is not None else 0
        return len(self._buf) + len(self._chunk) - self._pos + big

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
        chunk, pos = self._chunk, self._pos
        if pos < len(chunk):
            if len(chunk) - pos >= 4:
                size = self._frame_size(chunk, pos)
                end = pos + 4 + size
                if end <= len(chunk):
                    self._pos = end
                    return memoryview(chunk)[pos + 4 : end]
            self._carry()  # an incomplete frame: continue in the carry-over buffer
        elif chunk:
            self._chunk, self._pos = b"", 0  # all of it handed out: let it go
        buf = self._buf
        if len(buf) < 4:
            return None
        size = self._frame_size(buf, 0)
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

    def _frame_size(self, data: bytes | bytearray, pos: int) -> int:
        (size,) = FRAME_SIZE.unpack_from(data, pos)
        if size < 8 or size > self.max_frame_size:
            raise ProtocolError(f"frame size {size} outside [8, {self.max_frame_size}]")
        return int(size)


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


# --------------------------------------------------------------------------------------------
# Versions kio lacks: our own schemas


class _Cursor:
    """Reads big-endian primitives from a request body; truncated or impossible input (a length
    or count larger than the bytes left) is a ProtocolError, checked before any allocation."""

    __slots__ = ("pos", "view")

    def __init__(self, view: memoryview, pos: int) -> None:
        self.view = view
        self.pos = pos

    def _take(self, fmt: struct.Struct) -> Any:
        if self.pos + fmt.size > len(self.view):
            raise ProtocolError("request body truncated")
        (value,) = fmt.unpack_from(self.view, self.pos)
        self.pos += fmt.size
        return value

    def int16(self) -> int:
        return int(self._take(_I16))

    def int32(self) -> int:
        return int(self._take(_I32))

    def string(self) -> str:
        length = self.int16()
        if length < 0 or self.pos + length > len(self.view):
            raise ProtocolError(f"string of length {length} does not fit the request")
        raw = bytes(self.view[self.pos : self.pos + length])
        self.pos += length
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"string is not UTF-8: {exc}") from None

    def count(self, min_item_size: int, nullable: bool = False) -> int | None:
        """An array length: None for a null array (-1) where allowed."""
        n = self.int32()
        if n == -1 and nullable:
            return None
        if n < 0 or n * min_item_size > len(self.view) - self.pos:
            raise ProtocolError(f"array of {n} items does not fit the request")
        return n


_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
_BOOL: Final = struct.Struct(">?")


def _write_string(out: ChunkWriter, text: str) -> None:
    raw = text.encode()
    out.write(_I16.pack(len(raw)) + raw)


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000) if isinstance(value, timedelta) else int(value)


@dataclass(frozen=True, slots=True)
class OwnSchema:
    """How to read one request version and write its response without kio.

    ``model_version``: the version kio has whose classes carry the same fields (requests are
    decoded into them, handlers build responses from them). ``read_body(cursor, module)``
    returns the request built with the model's request module; ``write_body(out, response)``
    writes a model response object in this version's layout."""

    model_version: int
    read_body: Callable[[_Cursor, Any], Any]
    write_body: Callable[[ChunkWriter, Any], None]


def _read_describe_log_dirs_v0(cur: _Cursor, m: Any) -> Any:
    # DescribeLogDirsRequest v0: Topics ([]DescribableLogDirTopic, nullable):
    #   Topic (string), Partitions ([]int32)
    n = cur.count(2 + 4, nullable=True)
    if n is None:
        return m.DescribeLogDirsRequest(topics=None)
    topics = []
    for _ in range(n):
        name = cur.string()
        count = cur.count(4)
        assert count is not None
        partitions = tuple(cur.int32() for _ in range(count))
        topics.append(m.DescribableLogDirTopic(topic=name, partitions=partitions))
    return m.DescribeLogDirsRequest(topics=tuple(topics))


def _write_describe_log_dirs_v0(out: ChunkWriter, response: Any) -> None:
    # DescribeLogDirsResponse v0: ThrottleTimeMs int32, Results []: ErrorCode int16, LogDir
    # string, Topics []: Name string, Partitions []: PartitionIndex int32, PartitionSize int64,
    # OffsetLag int64, IsFutureKey bool
    out.write(_I32.pack(_ms(response.throttle_time)) + _I32.pack(len(response.results)))
    for result in response.results:
        out.write(_I16.pack(int(result.error_code)))
        _write_string(out, result.log_dir)
        out.write(_I32.pack(len(result.topics)))
        for topic in result.topics:
            _write_string(out, topic.name)
            out.write(_I32.pack(len(topic.partitions)))
            for p in topic.partitions:
                out.write(
                    _I32.pack(p.partition_index)
                    + _I64.pack(p.partition_size)
                    + _I64.pack(p.offset_lag)
                    + _BOOL.pack(bool(p.is_future_key))
                )


OWN_SCHEMAS: Final[dict[tuple[int, int], OwnSchema]] = {
    # Kafka's DescribeLogDirsRequest.json: "Version 1 is the same as version 0."
    (35, 0): OwnSchema(1, _read_describe_log_dirs_v0, _write_describe_log_dirs_v0),
}


def model_version(api_key: int, version: int) -> int:
    """The kio version whose classes stand for (api_key, version): itself, unless one of
    OWN_SCHEMAS serves it."""
    own = OWN_SCHEMAS.get((api_key, version))
    return version if own is None else own.model_version


@cache
def _flexible_request_header(api_key: int, version: int) -> bool:
    header_cls = _request_codec(api_key, version)[2].__header_schema__
    if int(header_cls.__version__) == 0:  # no client id; no request we read ourselves has it
        raise UnsupportedRequest(api_key, version, -1, "request header v0 is not read here")
    return bool(header_cls.__flexible__)


def _read_header(view: memoryview, api_key: int, version: int) -> tuple[str | None, int]:
    """The request header of (api_key, version) at the start of ``view``, for requests whose
    body we read ourselves: (client id, bytes it took). Header v1: key, version, correlation
    id, client id (a nullable string with an int16 length, in v2 too); v2 adds a tagged-field
    section, skipped whole (no header tag is defined). Malformed input is a ProtocolError."""
    flexible = _flexible_request_header(api_key, version)
    end = len(view)
    if end < 10:
        raise ProtocolError(f"API {api_key} v{version} header truncated")
    (length,) = _I16.unpack_from(view, 8)
    pos = 10
    client_id: str | None = None
    if length >= 0:
        if pos + length > end:
            raise ProtocolError(f"API {api_key} v{version} header: client id does not fit")
        try:
            client_id = str(view[pos : pos + length], "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"API {api_key} v{version} header: client id: {exc}") from None
        pos += length
    elif length != -1:
        raise ProtocolError(f"API {api_key} v{version} header: client id length {length}")
    if flexible:
        fields, pos = _uvarint_at(view, pos)
        for _ in range(fields):
            _tag, pos = _uvarint_at(view, pos)
            size, pos = _uvarint_at(view, pos)
            pos += size
            if pos > end:
                raise ProtocolError(f"API {api_key} v{version} header: tagged field truncated")
    return client_id, pos


def _uvarint_at(view: memoryview, pos: int) -> tuple[int, int]:
    try:
        return read_uvarint(view, pos, len(view))
    except ValueError as exc:
        raise ProtocolError(f"request header: {exc}") from None


def _decode_own(
    own: OwnSchema, frame: bytes | memoryview, api_key: int, version: int, correlation_id: int
) -> tuple[RequestHeader, Any]:
    view = memoryview(frame).toreadonly()
    client_id, header_size = _read_header(view, api_key, own.model_version)
    module = load_payload_module(api_key, own.model_version, EntityType.request)
    body = own.read_body(_Cursor(view, header_size), module)
    return RequestHeader(api_key, version, correlation_id, client_id), body


# Bodies read by hand (see the module docstring): API key -> (first version, last version, reader).
_READ_BY_HAND: Final[dict[int, tuple[int, int, Callable[[memoryview, int, int], Any]]]] = {
    PRODUCE_KEY: (
        produce_request.FIRST_VERSION,
        produce_request.LAST_VERSION,
        produce_request.read_produce_body,
    ),
    FETCH_KEY: (
        fetch_request.FIRST_VERSION,
        fetch_request.LAST_VERSION,
        fetch_request.read_fetch_body,
    ),
}


def _decode_by_hand(
    frame: bytes | memoryview,
    api_key: int,
    version: int,
    correlation_id: int,
    read_body: Callable[[memoryview, int, int], Any],
) -> tuple[RequestHeader, Any]:
    """A body read by our own reader (Produce's records stay views of ``frame``)."""
    view = memoryview(frame).toreadonly()
    client_id, header_size = _read_header(view, api_key, version)
    try:
        body = read_body(view, header_size, version)
    except ValueError as exc:
        raise ProtocolError(f"malformed API {api_key} v{version} request: {exc}") from exc
    return RequestHeader(api_key, version, correlation_id, client_id), body


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
    own = OWN_SCHEMAS.get((api_key, version))
    if own is not None:
        return _decode_own(own, frame, api_key, version, correlation_id)
    by_hand = _READ_BY_HAND.get(api_key)
    if by_hand is not None and by_hand[0] <= version <= by_hand[1]:
        return _decode_by_hand(frame, api_key, version, correlation_id, by_hand[2])
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
    if isinstance(response, OwnResponse):
        return _encode_own_response(api_key, version, correlation_id, response)
    own = OWN_SCHEMAS.get((api_key, version))
    response_cls, write_header, write_body = _response_codec(
        api_key, version if own is None else own.model_version
    )
    out = ChunkWriter()
    out.write(b"\0\0\0\0")  # size placeholder, patched below
    header_cls = response_cls.__header_schema__
    write_header(out, header_cls(correlation_id=correlation_id))
    if own is None:
        write_body(out, response)
    else:
        own.write_body(out, response)
    return _framed(out)


def _framed(out: ChunkWriter) -> list[bytes | bytearray | memoryview]:
    """The chunks of a response written after a 4-byte placeholder, with its size patched in."""
    chunks = out.chunks()
    first = chunks[0]
    assert isinstance(first, bytearray)
    FRAME_SIZE.pack_into(first, 0, out.size - 4)
    return chunks


class OwnResponse:
    """Base of responses that write their own body instead of going through kio classes
    (kvstream.protocol.produce_response, fetch_response); the codec adds the header and the
    size."""

    __slots__ = ()

    def write_body(self, version: int, out: ChunkWriter) -> None:
        raise NotImplementedError


@cache
def _flexible_response_header(api_key: int, version: int) -> bool:
    header_cls = _response_codec(api_key, version)[0].__header_schema__
    return bool(header_cls.__flexible__)


def _encode_own_response(
    api_key: int, version: int, correlation_id: int, response: OwnResponse
) -> list[bytes | bytearray | memoryview]:
    out = ChunkWriter()
    # size placeholder (patched below), correlation id, and header v1's empty tag section
    out.write(b"\0\0\0\0" + _I32.pack(correlation_id))
    if _flexible_response_header(api_key, version):
        out.write(b"\0")
    response.write_body(version, out)
    return _framed(out)


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
    keeps what it knows. Fields it needs and was not given keep kio's defaults (or raise). A
    field that no version of the message has is a mistake in the caller (a typo would
    otherwise be dropped silently): ``TypeError`` names it.
    """
    names = _field_names(cls)
    kept = {k: v for k, v in values.items() if k in names}
    if len(kept) != len(values):
        unknown = values.keys() - _any_version_field_names(cls.__module__, cls.__name__)
        if unknown:
            raise TypeError(
                f"{cls.__name__} has no field {', '.join(sorted(unknown))} in any version"
            )
    return cls(**kept)


@cache
def _any_version_field_names(module_name: str, class_name: str) -> frozenset[str]:
    """The field names of a message class in every version kio has.

    kio puts version N of a message's entities in ``kio.schema.<api>.v<N>.<request|response>``;
    the same class name in the sibling version modules is the same entity in another version.
    """
    package, _version, kind = module_name.rsplit(".", 2)
    names: set[str] = set()
    for module_path in [module_name] + [
        f"{package}.v{v}.{kind}" for v in range(_MAX_VERSION_PROBED + 1)
    ]:
        try:
            module = importlib.import_module(module_path)
        except ImportError:
            continue
        same = getattr(module, class_name, None)
        if isinstance(same, type):
            names |= _field_names(same)
    return frozenset(names)


_MAX_VERSION_PROBED: Final = 32
"""Versions of a message looked at by `_any_version_field_names` (Kafka 4.x's highest is 18)."""


def has_field(cls: type[Any], name: str) -> bool:
    return name in _field_names(cls)
