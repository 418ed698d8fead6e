"""Typed stand-ins for the server's side of the broker, and request frames, for the connection
tests (test_server_connection, test_connection_streams, test_connection_close).

Owns nothing but test plumbing. `FakeServer` is a `ServerServices` whose writer the test holds
(`HeldWriter`) and whose handlers are the registry's, over a real broker that is not serving:
handlers that need no running task (ApiVersions, Metadata) answer as they would in a broker.
"""

from __future__ import annotations

import dataclasses
import importlib
import struct
from pathlib import Path
from typing import Any

import trio
from kio.index import load_request_schema

from kvstream.broker import open_broker
from kvstream.config import load_config
from kvstream.protocol.codec import build
from kvstream.server.services import Dispatch, ServerServices
from tests.integration.wire import request_frame


def _module(api_key: int, version: int) -> Any:
    return importlib.import_module(load_request_schema(api_key, version).__module__)


def api_versions(correlation: int) -> bytes:
    """An ApiVersions v3 request frame."""
    m = _module(18, 3)
    body = m.ApiVersionsRequest(client_software_name="test", client_software_version="1")
    return request_frame(body, correlation, "test")


def metadata(correlation: int, topics: int | None = None) -> bytes:
    """A Metadata v12 request frame for ``topics`` topics named t000000... (None: all topics;
    enough names make a large frame)."""
    m = _module(3, 12)
    wanted = (
        None
        if topics is None
        else tuple(m.MetadataRequestTopic(topic_id=None, name=f"t{i:06d}") for i in range(topics))
    )
    body = build(
        m.MetadataRequest,
        topics=wanted,
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    return request_frame(body, correlation, "test")


def unknown_api_versions(correlation: int) -> bytes:
    """ApiVersions in a version no broker knows (v99): header v1, empty body."""
    payload = struct.pack(">hhih", 18, 99, correlation, 4) + b"test"
    return struct.pack(">i", len(payload)) + payload


class HeldWriter:
    """A `Backpressure` whose room the test opens and closes."""

    def __init__(self) -> None:
        self.room = True
        self.waits = 0
        self._changed = trio.Event()

    def has_room(self) -> bool:
        return self.room

    async def wait_for_room(self) -> None:
        self.waits += 1
        while not self.room:
            await self._changed.wait()

    def open(self) -> None:
        self.room = True
        self._changed.set()
        self._changed = trio.Event()


@dataclasses.dataclass
class FakeServer:
    """A `ServerServices` with a writer the test holds."""

    request_max_bytes: int
    frame_timeout_s: float
    writer: HeldWriter
    dispatch: Dispatch


def fake_server(tmp_path: Path) -> FakeServer:
    """The registry's handlers over a broker on the memory engine that is not serving."""
    config = load_config(None, [f"log.dirs={tmp_path}", "storage.engine=memory"])
    return FakeServer(1 << 20, 5.0, HeldWriter(), Dispatch.from_registry(open_broker(config)))


def _is_server_services(server: FakeServer) -> ServerServices:
    return server  # mypy: the fake provides what the server is promised
