"""Test rules for kvstream (copied habit from trio-websocket's test module):

- Only loopback: every broker binds 127.0.0.1, every client connects there.
- Port 0 or a free port picked by the OS; never a fixed port.
- Every test has a hard timeout (pytest-timeout, see pyproject) and every loop is bounded.
- Time-based logic in unit tests uses trio's MockClock/autojump_clock, never real sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker import BrokerProcess, start_broker


@pytest.fixture
def broker_engine() -> str:
    """The storage engine of the `broker` fixture. A module whose tests must hold on every
    persistent engine overrides this fixture with one parametrized over
    `tests.integration.broker.engines_under_test()` (see test_clients.py)."""
    return "lmdb"


@pytest.fixture
def broker(tmp_path: Path, broker_engine: str) -> Iterator[BrokerProcess]:
    """A real kvstream broker process on a free loopback port, data in tmp_path."""
    proc = start_broker(tmp_path / "data", engine=broker_engine)
    try:
        yield proc
    finally:
        proc.stop()
