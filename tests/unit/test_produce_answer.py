"""The produce handler's answer always arrives: every partition's outcome, errors included.

Produce answers are completed by the writer's callbacks (registry.Ready); a callback that
failed half-way would leave the client waiting for ever, so each partition's failure becomes its
error code and the answer still goes out once every partition finished.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers.produce import _respond, _Result
from kvstream.log.partition import PartitionLog, StagedAppend
from kvstream.log.writer import Operation, WriteFailed
from kvstream.protocol.produce_response import PartitionAnswer, ProduceAnswer
from kvstream.storage.open import open_store


def _op() -> Operation[StagedAppend]:
    return Operation(stage=lambda staged: None, publish=lambda value: value)


def _log(log_start_offset: int) -> PartitionLog:
    plog = PartitionLog(open_store(None, "memory"), uuid.uuid4(), 0)
    plog.log_start_offset = log_start_offset
    return plog


def test_the_answer_waits_for_every_partition_and_carries_each_outcome() -> None:
    ok, failed, empty = _op(), _op(), _op()
    results: list[_Result] = [
        ("t", PartitionAnswer(0), ok, _log(3)),
        ("t", PartitionAnswer(1), failed, _log(3)),
        ("u", PartitionAnswer(0), empty, _log(0)),
        ("u", PartitionAnswer(1, ErrorCode.unknown_topic_or_partition.value), None, None),
    ]
    ready = _respond(-1, results)
    got: list[Any] = []
    ready.on_ready(got.append)

    ok.set(StagedAppend(10, 14, -1, False))
    failed.fail(WriteFailed("disk"))
    assert got == []  # one partition still open
    empty.set(None)  # type: ignore[arg-type]  # no result: an error for it, not a lost answer
    assert len(got) == 1
    answer = got[0]
    assert isinstance(answer, ProduceAnswer)
    t, u = answer.topics["t"], answer.topics["u"]
    assert (t[0].error_code, t[0].base_offset, t[0].log_start_offset) == (0, 10, 3)
    assert t[1].error_code != 0 and t[1].error_message == "disk"
    assert u[0].error_code != 0 and u[0].base_offset == -1
    assert u[1].error_code == ErrorCode.unknown_topic_or_partition.value


def test_acks_zero_answers_nothing_at_once() -> None:
    ready = _respond(0, [("t", PartitionAnswer(0), _op(), _log(0))])
    got: list[Any] = []
    ready.on_ready(got.append)
    assert got == [None]
