"""DescribeLogDirs (API key 35), versions 0-4.

Behaviour: one log dir, the broker's data directory (log.dirs; "memory" for the memory engine),
listing every requested partition (topics null: all) with its size in bytes, the sum of its
stored batches from the batch index (what retention.bytes counts), offset_lag 0 (one replica)
and is_future_key false. From v4 total_bytes/usable_bytes of the volume holding the directory
(-1 for the memory engine). Unknown topics and partitions are left out, as Kafka does. v0 has
v1's layout; kio has no schema for it, so the codec reads and writes it with its own
(codec.OWN_SCHEMAS) and this handler sees v1's classes.
Not implemented: AlterReplicaLogDirs (one directory only).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


def _volume(engine: str, log_dir: str) -> tuple[str, int, int]:
    """(absolute log dir, volume total bytes, usable bytes); -1 sizes when unknown."""
    if engine == "memory":
        return "memory", -1, -1
    path = os.path.abspath(log_dir)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return path, -1, -1
    return path, usage.total, usage.free


@handles(35, versions=(0, 4))
async def describe_log_dirs(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    logs = broker.logs
    if req.topics is None:
        wanted = [(t, list(range(t.partitions))) for t in logs.image.topics.values()]
    else:
        wanted = []
        for d in req.topics:
            topic = logs.topic(d.topic)
            if topic is not None:
                wanted.append((topic, [int(p) for p in d.partitions]))
    topics = []
    for topic, indexes in sorted(wanted, key=lambda w: w[0].name):
        parts = []
        for index in indexes:
            plog = logs.partition(topic, index)
            if plog is None:
                continue
            parts.append(
                ctx.response(
                    "DescribeLogDirsPartition",
                    partition_index=index,
                    partition_size=plog.size_bytes(),
                    offset_lag=0,
                    is_future_key=False,
                )
            )
        if parts:
            topics.append(
                ctx.response("DescribeLogDirsTopic", name=topic.name, partitions=tuple(parts))
            )
    path, total, usable = _volume(broker.config.storage_engine, broker.config.log_dir)
    result = ctx.response(
        "DescribeLogDirsResult",
        error_code=ErrorCode.none,
        log_dir=path,
        topics=tuple(topics),
        total_bytes=total,
        usable_bytes=usable,
    )
    return ctx.response(
        "DescribeLogDirsResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        results=(result,),
    )
