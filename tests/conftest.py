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

from tests.integration.broker import BrokerProcess, check_stopped_data_dirs, start_broker


def _fail_on_store_problems() -> None:
    problems = check_stopped_data_dirs()
    if problems:
        pytest.fail("kvstream-inspect check found problems:\n" + "\n".join(problems[:50]))


@pytest.fixture(autouse=True)
def _check_data_dirs_after_test() -> Iterator[None]:
    """End of every test: `check` (kvstream-inspect) on the data dir of each broker the test
    started and stopped. Autouse fixtures are set up first, so this runs after the test's own
    fixtures stopped their brokers."""
    yield
    _fail_on_store_problems()


@pytest.fixture(autouse=True, scope="session")
def _check_data_dirs_at_end() -> Iterator[None]:
    """Brokers of module- or session-scoped fixtures are checked once they stopped."""
    yield
    _fail_on_store_problems()


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
