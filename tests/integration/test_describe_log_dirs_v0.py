"""DescribeLogDirs v0 (served with the codec's own schema) against a real broker.

kafka-python 3 picks versions from ApiVersions; told the broker is Kafka 1.1 (api_version) it
uses that release's versions, DescribeLogDirs v0, the way kafka-python 2.x always did. The sizes
it reads must equal what the negotiated version (v4) reports, and must not be zero.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import confluent_kafka

from tests.integration.broker import BrokerProcess

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.admin

DEADLINE_S = 30.0


def _sizes(b: BrokerProcess, topic: str, **conf: Any) -> dict[int, int]:
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=b.bootstrap, **conf)
    try:
        (answer,) = admin.describe_log_dirs({topic: [0, 1, 9]})  # 9: no such partition
    finally:
        admin.close()
    (log_dir,) = answer["log_dirs"]
    assert log_dir["error_code"] == 0
    (entry,) = log_dir["topics"]
    assert entry["name"] == topic
    return {p["partition_index"]: p["partition_size"] for p in entry["partitions"]}


def test_kafka_python_describe_log_dirs_v0_matches_v4(broker: BrokerProcess) -> None:
    topic = f"dld0-{uuid.uuid4().hex[:8]}"
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([kafka.admin.NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    p = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(7):
        p.produce(topic, value=b"v" * (100 + i), partition=i % 2)
        p.flush(DEADLINE_S)
    assert p.flush(DEADLINE_S) == 0
    v0 = _sizes(broker, topic, api_version=(1, 1, 0))
    v4 = _sizes(broker, topic)
    assert v0 == v4
    assert set(v0) == {0, 1} and all(size > 0 for size in v0.values())
