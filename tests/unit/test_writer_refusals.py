"""What the group-commit writer does when an operation's staging raises.

An expected refusal (the log layer's AppendError, LogManager's Refused and TopicExists: each a
`Refusal`) fails that operation quietly: its caller turns it into a Kafka error code. Any other
exception is a bug: it is logged at ERROR with its traceback, and still fails only that
operation; the rest of the group commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio

from kvstream.log.manager import Refused, TopicExists
from kvstream.log.partition import AppendError
from kvstream.log.staging import StagedWrites
from kvstream.log.writer import GroupCommitWriter, Operation
from kvstream.storage.open import open_store

WRITER_LOG = "kvstream.log.writer"


def _put(key: bytes) -> Operation[None]:
    def stage(staged: StagedWrites) -> None:
        staged.put(key, b"v")

    return Operation(stage, lambda _: None)


def _raising(exc: Exception) -> Operation[None]:
    def stage(_staged: StagedWrites) -> None:
        raise exc

    return Operation(stage, lambda _: None)


async def _run_group(ops: list[Operation[None]]) -> None:
    """Submit ``ops`` before the writer runs, so they form one group, and wait for all."""
    store = open_store(None, "memory")
    writer = GroupCommitWriter(store)
    for op in ops:
        writer.submit(op)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(30):
            for op in ops:
                await op.wait_done()
        nursery.cancel_scope.cancel()
    with store.read() as txn:
        assert txn.get(b"before") == b"v"
        assert txn.get(b"after") == b"v"
    store.close()


@pytest.mark.parametrize(
    "refusal",
    [
        lambda: AppendError("OUT_OF_ORDER_SEQUENCE_NUMBER", "sequence 7 does not follow 5"),
        lambda: Refused("OFFSET_OUT_OF_RANGE", "offset 10 is beyond the high watermark 9"),
        lambda: TopicExists("t"),
    ],
    ids=["AppendError", "Refused", "TopicExists"],
)
async def test_an_expected_refusal_fails_its_operation_quietly(
    refusal: Callable[[], Exception], caplog: pytest.LogCaptureFixture
) -> None:
    exc = refusal()
    refused = _raising(exc)
    caplog.set_level(logging.DEBUG, logger=WRITER_LOG)
    await _run_group([_put(b"before"), refused, _put(b"after")])
    assert refused.error is exc
    assert [r for r in caplog.records if r.name == WRITER_LOG] == []


async def test_an_unexpected_exception_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bug = KeyError("a bug in staging")
    broken = _raising(bug)
    caplog.set_level(logging.DEBUG, logger=WRITER_LOG)
    before, after = _put(b"before"), _put(b"after")
    await _run_group([before, broken, after])
    assert broken.error is bug
    assert before.error is None and after.error is None  # only that operation failed
    errors = [r for r in caplog.records if r.name == WRITER_LOG and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[1] is bug
    assert "a bug in staging" in caplog.text
