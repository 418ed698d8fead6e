"""kvstream-inspect against stores written by a real broker and real clients.

One store is built per module: confluent-kafka (idempotent; binary and empty keys and values,
null keys and values, headers with null and repeated names) on a three-partition topic, a
zstd topic (confluent-kafka), a gzip topic (kafka-python, idempotent by default), a compacted
topic the broker's cleaner has compacted (so it has gaps), and two consumer groups with
committed offsets. Every subcommand then runs as a subprocess (the console script) twice: with
the broker still running (LMDB is read beside it) and after it stopped, and its output is
checked against what the clients were told (partitions and offsets of every delivery, the
bytes produced, the group commits, the producer ids in the stored batch headers).

Also: `check` on a healthy store exits 0, and on a compacted copy (`copy --compact`) with one
byte flipped inside a stored batch (lmdb opened directly) exits 1 naming the partition and the
batch offset; bad input gets one line on stderr and exit status 2; a LevelDB store is refused
clearly while its broker runs and read fully once it stopped.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import lmdb
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from kvstream.log import keys
from tests.integration.broker import BrokerProcess, start_broker
from tests.integration.clients import (
    Confluent,
    KafkaPython,
    Msg,
    make_messages,
    normalize_headers,
    stored_batches,
)

pytestmark = pytest.mark.timeout(300)

INSPECT = str(Path(sys.executable).with_name("kvstream-inspect"))
DEADLINE_S = 30.0
EVENTS = "events"  # 3 partitions, idempotent confluent producer, every kind of key and value
ZSTD = "zipped"  # 1 partition, confluent with zstd
GZIP = "kp"  # 1 partition, kafka-python with gzip (idempotent by default)
COMPACTED = "compacted"  # cleanup.policy=compact, compacted by the broker's cleaner
GROUP = "inspect-group"
OTHER_GROUP = "other-group"
COMPACT_CONFIGS = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "segment.ms": "100",
}


@dataclass
class Built:
    broker: BrokerProcess
    t0_ms: int
    t1_ms: int
    produced: dict[str, dict[tuple[int, int], Msg]] = field(default_factory=dict)
    commits: dict[str, dict[tuple[str, int], tuple[int, str]]] = field(default_factory=dict)
    topic_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    compacted_latest: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    header_pids: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    """Producer ids in the batch headers as the broker serves them (raw Fetch v4)."""

    def hw(self, topic: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for p, o in self.produced[topic]:
            out[p] = max(out.get(p, 0), o + 1)
        return out


def run(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [INSPECT, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout[-2000:], proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def json_lines(*args: str) -> list[dict[str, Any]]:
    proc = run("--json", *args)
    assert proc.stderr == ""
    return [json.loads(line) for line in proc.stdout.splitlines()]


def as_bytes(value: str | None, encoding: str | None) -> bytes | None:
    if encoding is None:
        assert value is None
        return None
    assert value is not None
    if encoding == "text":
        return value.encode()
    assert encoding == "base64", encoding
    return base64.b64decode(value)


def _create(bootstrap: str, name: str, partitions: int, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=configs)])
    futures[name].result(timeout=DEADLINE_S)


def _produce_idempotent(bootstrap: str, topic: str, msgs: list[Msg]) -> dict[tuple[int, int], Msg]:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    out: dict[tuple[int, int], Msg] = {}
    errors: list[object] = []

    def report(msg: Msg) -> Any:
        def cb(err: object, m: confluent_kafka.Message) -> None:
            if err is not None:
                errors.append(err)
            else:
                p, o = m.partition(), m.offset()
                assert p is not None and o is not None
                out[(p, o)] = msg

        return cb

    for msg in msgs:
        producer.produce(
            topic, key=msg.key, value=msg.value, headers=list(msg.headers) or None,
            on_delivery=report(msg),
        )  # fmt: skip
        producer.poll(0)
    assert producer.flush(DEADLINE_S) == 0
    assert not errors, errors
    assert len(out) == len(msgs)
    return out


def _compact_topic(built: Built) -> None:
    """Five versions of 20 keys (and a key per round), one batch a round; wait for the cleaner."""
    bootstrap = built.broker.bootstrap
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    offsets: dict[tuple[int, int], Msg] = {}

    def cb(err: object, m: confluent_kafka.Message) -> None:
        assert err is None, err
        key, value, p, o = m.key(), m.value(), m.partition(), m.offset()
        assert key is not None and value is not None and p is not None and o is not None
        offsets[(p, o)] = Msg(key, value)
        built.compacted_latest[key] = (o, value)

    for version in range(5):
        # 20 keys every round, and one key of this round only: the cleaner keeps that record
        # and drops the superseded ones around it, so the batch keeps its offsets with gaps.
        names = [f"key-{k}" for k in range(10)] + [f"only-{version}"]
        names += [f"key-{k}" for k in range(10, 20)]
        for name in names:
            producer.produce(
                COMPACTED, key=name.encode(), value=f"v{version}-{name}".encode(),
                on_delivery=cb,
            )  # fmt: skip
        assert producer.flush(DEADLINE_S) == 0
        time.sleep(0.15)  # past segment.ms: the next round's batch is cleanable
    built.produced[COMPACTED] = offsets
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        (part,) = json_lines(built.broker.data_dir.as_posix(), "partitions", COMPACTED)
        if part["records"] <= 50:  # of 105: the active batch, and the rest cleaned
            return
        time.sleep(0.2)
    raise AssertionError(f"the cleaner did not compact {COMPACTED} within {DEADLINE_S} s")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    data = tmp_path_factory.mktemp("inspect") / "data"
    broker = start_broker(data, extra=["log.cleaner.backoff.ms=200"])
    try:
        if not broker.durable:
            pytest.skip("kvstream-inspect reads kvstream data directories only")
        bootstrap = broker.bootstrap
        t0 = int(time.time() * 1000)
        _create(bootstrap, EVENTS, 3, {})
        _create(bootstrap, ZSTD, 1, {})
        _create(bootstrap, GZIP, 1, {})
        _create(bootstrap, COMPACTED, 1, COMPACT_CONFIGS)
        built = Built(broker, t0, 0)
        built.produced[EVENTS] = _produce_idempotent(bootstrap, EVENTS, make_messages(600, "ev"))
        zmsgs = make_messages(300, "zs")
        zdone = Confluent().produce(bootstrap, ZSTD, zmsgs, compression="zstd")
        assert zdone is not None
        built.produced[ZSTD] = dict(zip(zdone, zmsgs, strict=True))
        kmsgs = make_messages(200, "kp", null_header_values=False)
        kdone = KafkaPython().produce(bootstrap, GZIP, kmsgs, compression="gzip")
        assert kdone is not None
        built.produced[GZIP] = dict(zip(kdone, kmsgs, strict=True))
        built.t1_ms = int(time.time() * 1000)

        hw = built.hw(EVENTS)
        built.commits[GROUP] = {
            (EVENTS, 0): (10, "first ten"),
            (EVENTS, 1): (hw[1], ""),
            (EVENTS, 2): (0, "ünïcode"),
        }
        built.commits[OTHER_GROUP] = {(ZSTD, 0): (123, "z")}
        for group, commits in built.commits.items():
            consumer = confluent_kafka.Consumer(
                {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
            )
            try:
                tps = [
                    confluent_kafka.TopicPartition(t, p, o, metadata=m)
                    for (t, p), (o, m) in commits.items()
                ]
                consumer.commit(offsets=tps, asynchronous=False)
            finally:
                consumer.close()

        admin = AdminClient({"bootstrap.servers": bootstrap})
        names = [EVENTS, ZSTD, GZIP, COMPACTED]
        described = admin.describe_topics(confluent_kafka.TopicCollection(names))
        for name, fut in described.items():
            tid = fut.result(timeout=DEADLINE_S).topic_id
            msb = tid.get_most_significant_bits() & (2**64 - 1)
            lsb = tid.get_least_significant_bits() & (2**64 - 1)
            built.topic_ids[name] = uuid.UUID(int=(msb << 64) | lsb)
        for topic in (EVENTS, GZIP):
            for p in built.hw(topic):
                served = stored_batches(bootstrap, topic, p)
                built.header_pids[(topic, p)] = {h.producer_id for h in served}
        _compact_topic(built)
        yield built
    finally:
        broker.stop()


@pytest.fixture(scope="module", params=["live", "stopped"])
def store(request: pytest.FixtureRequest, built: Built) -> Iterator[Built]:
    """The built store, with its broker running ("live") or stopped."""
    if request.param == "live":
        if not built.broker.alive():
            built.broker.start()
    else:
        built.broker.stop()
        assert not built.broker.alive()
    yield built


def _dir(built: Built) -> str:
    return built.broker.data_dir.as_posix()


# -- stat, topics, partitions ----------------------------------------------------------------


def test_stat(store: Built) -> None:
    (stat,) = json_lines(_dir(store), "stat")
    assert (stat["engine"], stat["recorded_engine"], stat["format_version"]) == ("lmdb", "lmdb", 1)
    assert (stat["topics"], stat["partitions"], stat["groups"]) == (4, 6, 2)
    assert stat["metadata_records"] == 4
    assert stat["next_producer_id"] >= 2  # the confluent and the kafka-python producers
    assert stat["page_size"] > 0 and stat["used_pages"] > 0
    assert stat["file_size"] >= stat["used_pages"] * stat["page_size"]
    batches = sum(p["batches"] for p in json_lines(_dir(store), "partitions"))
    assert stat["entries"] > 2 * batches  # a batch and its index entry each, and more
    text = subprocess.run(
        [sys.executable, "-m", "kvstream.inspect", _dir(store), "stat"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "engine            lmdb" in text
    assert "partitions        6" in text


def test_topics(store: Built) -> None:
    topics = {t["name"]: t for t in json_lines(_dir(store), "topics")}
    assert set(topics) == {EVENTS, ZSTD, GZIP, COMPACTED}
    for name, tid in store.topic_ids.items():
        assert topics[name]["topic_id"] == str(tid)
    assert [topics[n]["partitions"] for n in (EVENTS, ZSTD, GZIP, COMPACTED)] == [3, 1, 1, 1]
    assert topics[COMPACTED]["configs"] == COMPACT_CONFIGS
    assert topics[EVENTS]["configs"] == {}
    table = run(_dir(store), "topics").stdout.splitlines()
    assert table[0].split() == ["TOPIC", "ID", "PARTITIONS", "CONFIGS"]
    assert any(line.split()[:3] == [EVENTS, str(store.topic_ids[EVENTS]), "3"] for line in table)


def test_partitions(store: Built) -> None:
    parts = json_lines(_dir(store), "partitions")
    by = {(p["topic"], p["partition"]): p for p in parts}
    assert len(by) == 6
    for topic in (EVENTS, ZSTD, GZIP):
        for p, hw in store.hw(topic).items():
            info = by[(topic, p)]
            assert (info["log_start_offset"], info["high_watermark"], info["log_end_offset"]) == (
                0,
                hw,
                hw,
            )
            assert info["records"] == hw == sum(1 for tp in store.produced[topic] if tp[0] == p)
            assert 1 <= info["batches"] <= hw and info["bytes"] > 0
            assert store.t0_ms - 1000 <= info["first_timestamp"] <= info["last_timestamp"]
            assert info["last_timestamp"] <= info["max_timestamp"] <= store.t1_ms + 1000
    compacted = by[(COMPACTED, 0)]
    assert compacted["high_watermark"] == 105 and compacted["records"] <= 50
    assert compacted["cleaner_first_dirty_offset"] is not None
    only = json_lines(_dir(store), "partitions", EVENTS)
    assert [(p["topic"], p["partition"]) for p in only] == [(EVENTS, 0), (EVENTS, 1), (EVENTS, 2)]
    table = run(_dir(store), "partitions", GZIP).stdout.splitlines()
    assert table[0].split()[:5] == ["TOPIC", "PARTITION", "LOG_START", "HIGH_WATERMARK", "LOG_END"]
    assert table[1].split()[:5] == [GZIP, "0", "0", "200", "200"]


# -- dump ------------------------------------------------------------------------------------


def _dumped(
    built: Built, topic: str, *extra: str
) -> tuple[list[dict[str, Any]], dict[tuple[int, int], Msg]]:
    lines = json_lines(_dir(built), "dump", topic, *extra)
    batches = [line for line in lines if line["type"] == "batch"]
    msgs: dict[tuple[int, int], Msg] = {}
    for line in lines:
        if line["type"] != "record":
            continue
        headers = normalize_headers(
            (h["key"], as_bytes(h["value"], h["value_encoding"])) for h in line["headers"]
        )
        msg = Msg(
            as_bytes(line["key"], line["key_encoding"]),
            as_bytes(line["value"], line["value_encoding"]),
            headers,
        )
        assert (line["partition"], line["offset"]) not in msgs
        msgs[(line["partition"], line["offset"])] = msg
    return batches, msgs


def test_dump_is_what_the_clients_produced(store: Built) -> None:
    for topic, codec in ((EVENTS, "none"), (ZSTD, "zstd"), (GZIP, "gzip")):
        batches, msgs = _dumped(store, topic)
        assert msgs == store.produced[topic], topic
        assert all(b["crc_ok"] and b["error"] is None for b in batches)
        assert all(b["timestamp_type"] == "create_time" for b in batches)
        assert not any(b["transactional"] or b["control"] for b in batches)
        codecs = {b["compression"] for b in batches}
        assert codec in codecs and codecs <= {codec, "none"}, (topic, codecs)
        assert sum(b["records_count"] for b in batches) == len(store.produced[topic])
    batches, _ = _dumped(store, EVENTS)
    assert len({b["producer_id"] for b in batches}) == 1 and batches[0]["producer_id"] >= 0
    assert all(b["producer_epoch"] == 0 and b["base_sequence"] >= 0 for b in batches)
    batches, _ = _dumped(store, ZSTD)
    assert {b["producer_id"] for b in batches} == {-1}


def test_dump_of_a_compacted_topic_shows_the_gaps(store: Built) -> None:
    batches, msgs = _dumped(store, COMPACTED)
    latest = {key: (0, offset) for key, (offset, _value) in store.compacted_latest.items()}
    for key, (offset, value) in store.compacted_latest.items():
        assert msgs[(0, offset)] == Msg(key, value), key
    assert set(latest.values()) <= set(msgs)
    assert len(msgs) <= 50
    for version in range(4):  # the records of keys written once survive in their batches
        assert Msg(f"only-{version}".encode(), f"v{version}-only-{version}".encode()) in (
            msgs.values()
        )
    gapped = [b for b in batches if b["last_offset"] - b["base_offset"] + 1 > b["records_count"]]
    assert gapped and all(b["crc_ok"] for b in batches)
    assert [b["base_offset"] for b in batches] == sorted(b["base_offset"] for b in batches)


def test_dump_from_and_count(store: Built) -> None:
    _batches, msgs = _dumped(store, EVENTS, "--partition", "1", "--from", "7", "--count", "5")
    assert sorted(msgs) == [(1, o) for o in range(7, 12)]
    assert all(msgs[k] == store.produced[EVENTS][k] for k in msgs)
    _batches, msgs = _dumped(store, EVENTS, "--count", "3")
    assert sorted(msgs) == [(p, o) for p in range(3) for o in range(3)]
    hw = store.hw(EVENTS)[2]
    assert _dumped(store, EVENTS, "--partition", "2", "--from", str(hw))[1] == {}
    text = run(_dir(store), "dump", EVENTS, "--partition", "0", "--count", "2").stdout
    lines = text.splitlines()
    assert lines[0].startswith(f"batch {EVENTS}/0 offsets 0..")
    assert "compression=none" in lines[0] and "crc=ok" in lines[0]
    records = [line for line in lines if line.startswith("  offset=")]
    assert [r.split()[0] for r in records] == ["offset=0", "offset=1"]


# -- groups and offsets ----------------------------------------------------------------------


def test_groups_and_offsets(store: Built) -> None:
    hw = store.hw(EVENTS)
    groups = {g["group"]: g for g in json_lines(_dir(store), "groups")}
    assert set(groups) == {GROUP, OTHER_GROUP}
    expected_lag = sum(hw[p] - o for (_t, p), (o, _m) in store.commits[GROUP].items())
    assert (groups[GROUP]["topics"], groups[GROUP]["partitions"]) == (1, 3)
    assert groups[GROUP]["lag"] == expected_lag
    assert groups[OTHER_GROUP]["lag"] == len(store.produced[ZSTD]) - 123
    assert store.t0_ms <= groups[GROUP]["last_commit_ms"] <= int(time.time() * 1000)
    for group, commits in store.commits.items():
        rows = json_lines(_dir(store), "offsets", group)
        got = {(r["topic"], r["partition"]): r for r in rows}
        assert set(got) == set(commits)
        for (topic, p), (offset, meta) in commits.items():
            row = got[(topic, p)]
            high = store.hw(topic)[p]
            # confluent-kafka sends the metadata with its C string's terminating NUL
            assert (row["offset"], row["metadata"].rstrip("\x00")) == (offset, meta)
            assert (row["high_watermark"], row["lag"]) == (high, high - offset)
    table = run(_dir(store), "offsets", GROUP).stdout.splitlines()
    assert table[0].split()[:5] == ["TOPIC", "PARTITION", "OFFSET", "HIGH_WATERMARK", "LAG"]
    assert table[1].split()[:5] == [EVENTS, "0", "10", str(hw[0]), str(hw[0] - 10)]


# -- producers -------------------------------------------------------------------------------


def test_producers(store: Built) -> None:
    for topic in (EVENTS, GZIP):
        for p, hw in store.hw(topic).items():
            rows = json_lines(_dir(store), "producers", topic, "--partition", str(p))
            assert {r["producer_id"] for r in rows} == store.header_pids[(topic, p)]
            (row,) = rows
            assert (row["topic"], row["partition"], row["producer_epoch"]) == (topic, p, 0)
            assert row["last_offset"] == hw - 1
            assert row["last_sequence"] == hw - 1  # one session, sequences from 0
            assert 1 <= len(row["batches"]) <= 5
            assert row["batches"][-1]["last_offset"] == hw - 1
    pids = {r["producer_id"] for r in json_lines(_dir(store), "producers", EVENTS)}
    gzip_pids = {r["producer_id"] for r in json_lines(_dir(store), "producers", GZIP)}
    assert len(pids) == 1 and pids.isdisjoint(gzip_pids)
    assert json_lines(_dir(store), "producers", ZSTD) == []  # not idempotent


# -- check and copy --------------------------------------------------------------------------


def test_check_healthy(store: Built) -> None:
    proc = run(_dir(store), "check")
    assert proc.stderr == ""  # no progress bar: stderr is not a terminal
    assert proc.stdout.startswith("healthy: 6 partitions, ")
    lines = json_lines(_dir(store), "check", "--deep")
    assert len(lines) == 1 and lines[0]["type"] == "summary" and lines[0]["healthy"] is True
    parts = json_lines(_dir(store), "partitions")
    assert lines[0]["batches"] == sum(p["batches"] for p in parts)
    assert lines[0]["bytes"] == sum(p["bytes"] for p in parts)


def test_copy_compact_then_a_flipped_byte_fails_check(store: Built, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    proc = run(_dir(store), "copy", "--compact", dest.as_posix())
    assert proc.stdout.startswith("copied ") and "lmdb-compact" in proc.stdout
    assert run(dest.as_posix(), "check").returncode == 0
    source_parts = json_lines(_dir(store), "partitions", EVENTS)
    assert json_lines(dest.as_posix(), "partitions", EVENTS) == source_parts
    assert _dumped(store, EVENTS)[1] == store.produced[EVENTS]
    again = run(_dir(store), "copy", "--compact", dest.as_posix(), check_rc=2)
    assert again.stdout == "" and "not empty" in again.stderr
    assert again.stderr.count("\n") == 1

    # Flip one byte in the middle of the last batch of events/1, the way a bad disk would.
    tid = store.topic_ids[EVENTS]
    prefix = keys.partition_prefix(keys.BATCH, tid, 1)
    env = lmdb.open(dest.as_posix(), subdir=True, max_dbs=0)
    try:
        with env.begin(write=True) as txn:
            cursor = txn.cursor()
            assert cursor.set_range(keys.prefix_end(prefix)) and cursor.prev()
            key, value = cursor.key(), bytearray(cursor.value())
            assert key.startswith(prefix) and len(value) > 100
            value[len(value) // 2 + 30] ^= 0x10
            assert txn.put(key, bytes(value))
    finally:
        env.close()
    base = keys.offset_of(key)

    proc = run(dest.as_posix(), "check", check_rc=1)
    assert f"PROBLEM topic {EVENTS} partition 1 offset {base}: CRC32C mismatch" in proc.stdout
    assert proc.stdout.count("PROBLEM") == 1
    assert proc.stdout.splitlines()[-1].startswith("1 problem(s): 6 partitions")
    lines = [
        json.loads(x)
        for x in run("--json", dest.as_posix(), "check", check_rc=1).stdout.splitlines()
    ]
    problem = {"topic": EVENTS, "partition": 1, "offset": base}
    assert [{k: x[k] for k in problem} for x in lines if x["type"] == "problem"] == [problem]
    assert lines[-1]["healthy"] is False
    dumped = json_lines(
        dest.as_posix(), "dump", EVENTS, "--partition", "1", "--from", str(base), "--count", "1"
    )
    assert dumped[0]["base_offset"] == base and dumped[0]["crc_ok"] is False


# -- bad input -------------------------------------------------------------------------------


def _one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr


def test_bad_input_on_a_real_store(store: Built) -> None:
    d = _dir(store)
    _one_line_error(run(d, "dump", "no-such-topic", check_rc=None), "unknown topic 'no-such-topic'")
    _one_line_error(run(d, "partitions", "nope", check_rc=None), "unknown topic 'nope'")
    _one_line_error(run(d, "offsets", "no-such-group", check_rc=None), "unknown group")
    _one_line_error(
        run(d, "producers", EVENTS, "--partition", "3", check_rc=None), "no partition 3"
    )
    _one_line_error(run(d, "dump", EVENTS, "--from", "-4", check_rc=None), "must not be negative")
    _one_line_error(run(d, "frobnicate", check_rc=None), "invalid choice")


def test_bad_input_directories(tmp_path: Path) -> None:
    _one_line_error(
        run((tmp_path / "missing").as_posix(), "stat", check_rc=None), "no such directory"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(run(empty.as_posix(), "check", check_rc=None), "not a kvstream data directory")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "data.mdb").write_bytes(b"this is not an LMDB file" * 300)
    _one_line_error(run(garbage.as_posix(), "stat", check_rc=None), "cannot open the lmdb store")
    foreign = tmp_path / "foreign"
    env = lmdb.open(foreign.as_posix(), subdir=True, max_dbs=0)
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    _one_line_error(run(foreign.as_posix(), "topics", check_rc=None), "not a kvstream store")
    newer = tmp_path / "newer"
    env = lmdb.open(newer.as_posix(), subdir=True, max_dbs=0)
    with env.begin(write=True) as txn:
        txn.put(keys.FORMAT_KEY, keys.BE32.pack(keys.FORMAT_VERSION + 1))
    env.close()
    proc = run(newer.as_posix(), "stat", check_rc=None)
    _one_line_error(proc, f"format version {keys.FORMAT_VERSION + 1} (newer)")
    assert f"reads format version {keys.FORMAT_VERSION} only" in proc.stderr
    afile = tmp_path / "file"
    afile.write_text("x")
    _one_line_error(run(afile.as_posix(), "stat", check_rc=None), "not a directory")


# -- LevelDB ---------------------------------------------------------------------------------


def test_leveldb_store_needs_a_stopped_broker(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "ldb", extra=["storage.engine=leveldb"])
    try:
        if not broker.durable:
            pytest.skip("kvstream-inspect reads kvstream data directories only")
        _create(broker.bootstrap, EVENTS, 2, {})
        produced = _produce_idempotent(broker.bootstrap, EVENTS, make_messages(200, "ldb"))
        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": GROUP, "enable.auto.commit": False}
        )
        try:
            consumer.commit(
                offsets=[confluent_kafka.TopicPartition(EVENTS, 1, 3)], asynchronous=False
            )
        finally:
            consumer.close()
        d = broker.data_dir.as_posix()
        locked = run(d, "stat", check_rc=None)
        _one_line_error(locked, "stop the broker")
        assert "leveldb" in locked.stderr
    finally:
        broker.stop()
    hw: dict[int, int] = {}
    for p, o in produced:
        hw[p] = max(hw.get(p, 0), o + 1)

    (stat,) = json_lines(d, "stat")
    assert (stat["engine"], stat["recorded_engine"], stat["topics"], stat["partitions"]) == (
        "leveldb",
        "leveldb",
        1,
        2,
    )
    assert stat["file_size"] > 0 and stat["used_pages"] is None
    parts = json_lines(d, "partitions")
    assert {p["partition"]: p["high_watermark"] for p in parts} == hw
    assert {p["partition"]: p["records"] for p in parts} == hw
    built = Built(broker, 0, 0, produced={EVENTS: produced})
    assert _dumped(built, EVENTS)[1] == produced
    (row,) = json_lines(d, "offsets", GROUP)
    assert (row["partition"], row["offset"], row["lag"]) == (1, 3, hw[1] - 3)
    pids = {r["producer_id"] for r in json_lines(d, "producers", EVENTS)}
    assert len(pids) == 1 and min(pids) >= 0
    assert run(d, "check").stdout.startswith("healthy: 2 partitions")

    dest = tmp_path / "ldb-copy"
    (copied,) = json_lines(d, "copy", "--compact", dest.as_posix())
    assert (copied["engine"], copied["method"]) == ("leveldb", "iteration")
    assert copied["entries"] == stat["entries"]
    assert json_lines(dest.as_posix(), "partitions") == parts
    assert run(dest.as_posix(), "check").returncode == 0
