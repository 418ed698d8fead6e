"""A tiny Kafka wire client for tests: send one kio request, read its response.

Owns nothing but a socket per call. Used where client libraries hide what we need to assert
(raw error codes, exact sequence numbers, long-poll timing bounds are never asserted here).
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.index import load_response_schema
from kio.serial import entity_reader, entity_writer

TIMEOUT_S = 15.0


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def request_frame(request: Any, correlation_id: int, client_id: str | None) -> bytes:
    """``request`` framed as a Kafka client sends it (size prefix, header, body), through kio."""
    cls = type(request)
    header_cls = cls.__header_schema__
    header = header_cls(
        request_api_key=int(cls.__api_key__),
        request_api_version=int(cls.__version__),
        correlation_id=correlation_id,
        client_id=client_id,
    )
    out = io.BytesIO()
    entity_writer(header_cls)(out, header)
    entity_writer(cls)(out, request)
    payload = out.getvalue()
    return struct.pack(">i", len(payload)) + payload


class WireClient:
    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        self.correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, request: Any, expect_response: bool = True) -> Any:
        cls = type(request)
        api_key, version = int(cls.__api_key__), int(cls.__version__)
        self.correlation += 1
        self.sock.sendall(request_frame(request, self.correlation, "kvstream-tests"))
        if not expect_response:
            return None
        (size,) = struct.unpack(">i", _recv_exactly(self.sock, 4))
        frame = memoryview(_recv_exactly(self.sock, size)).toreadonly()
        response_cls = load_response_schema(api_key, version)
        resp_header, used = entity_reader(response_cls.__header_schema__)(frame, 0)
        assert resp_header.correlation_id == self.correlation
        body, _ = entity_reader(response_cls)(frame, used)
        return body
