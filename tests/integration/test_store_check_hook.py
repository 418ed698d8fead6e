"""The end-of-test store check (tests/conftest.py) finds a damaged data directory.

Every integration test ends with kvstream-inspect's check on the data dir of each broker it
started; this proves that check would fail a test whose broker left a bad batch behind, and
that it only looks at brokers that have stopped.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import lmdb
import pytest
from confluent_kafka import Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from kvstream.log import keys
from tests.integration.broker import broker_kind, check_stopped_data_dirs, start_broker


@pytest.mark.skipif(broker_kind() != "kvstream", reason="checks kvstream's own data directory")
def test_check_hook_names_the_damaged_batch(tmp_path: Path) -> None:
    proc = start_broker(tmp_path / "data")
    try:
        admin = AdminClient({"bootstrap.servers": proc.bootstrap})
        admin.create_topics([NewTopic("hooked", 2, 1)])["hooked"].result(timeout=30)
        described = admin.describe_topics(TopicCollection(["hooked"]))["hooked"].result(30)
        msb = described.topic_id.get_most_significant_bits() & (2**64 - 1)
        lsb = described.topic_id.get_least_significant_bits() & (2**64 - 1)
        tid = uuid.UUID(int=(msb << 64) | lsb)
        producer = Producer({"bootstrap.servers": proc.bootstrap, "linger.ms": 5})
        for i in range(200):
            producer.produce("hooked", f"value-{i}".encode() * 8, key=b"k", partition=i % 2)
        assert producer.flush(30) == 0
        # A running broker is left for a later call (a module-scoped fixture stops it later).
        assert check_stopped_data_dirs() == []
    finally:
        proc.stop()

    prefix = keys.partition_prefix(keys.BATCH, tid, 1)
    env = lmdb.open(proc.data_dir.as_posix(), subdir=True, max_dbs=0)
    try:
        with env.begin(write=True) as txn:
            cursor = txn.cursor()
            assert cursor.set_range(prefix) and cursor.key().startswith(prefix)
            key, value = cursor.key(), bytearray(cursor.value())
            value[len(value) - 5] ^= 0x01
            assert txn.put(key, bytes(value))
    finally:
        env.close()
    base = keys.offset_of(key)

    problems = check_stopped_data_dirs()
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{proc.data_dir}: ")
    assert f"topic hooked partition 1 offset {base}" in problems[0]
    assert "CRC32C mismatch" in problems[0]
    # Checked once: the autouse teardown of this test does not report it again.
    assert check_stopped_data_dirs() == []
