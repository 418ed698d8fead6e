"""The broker's cleaner on LevelDB: the compaction tests of test_compaction.py against a broker
whose store the cleaner's worker process cannot open, so the worker reads it through the broker
(kvstream/log/remote_read.py) while it parses and rewrites the batches. (The restart test reads
the checkpoint with an LMDB helper: not here.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker import BrokerProcess, start_broker
from tests.integration.test_compaction import (
    test_compact_delete_applies_both,
    test_compaction_keeps_latest_per_key_and_drops_tombstones,
)

__all__ = [
    "test_compact_delete_applies_both",
    "test_compaction_keeps_latest_per_key_and_drops_tombstones",
]


@pytest.fixture
def cleaning_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(
        tmp_path / "data",
        extra=["log.cleaner.backoff.ms=200", "log.retention.check.interval.ms=100"],
        engine="leveldb",
    )
    if not proc.durable:
        proc.stop()
        pytest.skip("compaction tests need kvstream")
    try:
        yield proc
    finally:
        proc.stop()
