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
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A real kvstream broker process on a free loopback port, data in tmp_path."""
    proc = start_broker(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()
