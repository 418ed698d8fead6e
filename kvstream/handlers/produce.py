"""Produce (API key 0), versions 3-12 served; 0-2 advertised and refused.

Behaviour: each partition's records are split into batches, checked (magic 2, CRC32C, record
framing, decompressed size bound, batch size <= the topic's max.message.bytes) and handed to the
group-commit writer; the response is sent only after the commit holding them returned. acks=0
gets no response at all. Idempotent batches follow Kafka's sequence rules (a retried duplicate
gets its original offset). Every failure maps to a specific Kafka error code, never
UNKNOWN_SERVER_ERROR. message.timestamp.type=LogAppendTime stamps the batch (CRC recomputed).
On a topic whose cleanup.policy includes compact, a record with a null key gets INVALID_RECORD
(87) for its partition, as Kafka does (the cleaner would drop it); only those topics pay for
reading the records. The refusal names the culprits (KIP-467, Produce v8+): a record error per
keyless record (its index in the batch and Kafka's LogValidator message) and the partition's
error message that sums them up, so a client fails those records with INVALID_RECORD and the
rest of the batch with its "another record in the batch was invalid" outcome; nothing of the
batch is stored. The per-record detail is computed only once a batch is refused.
Version notes: v0-2 are advertised because librdkafka before 2.11.1 stops compressing unless
Produce v2 is listed; a request in them closes the connection (kio cannot decode them).
Not implemented: transactional batches (INVALID_TXN_STATE until transactions exist), v13
(topic ids in Produce).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.completion import Completion
from kvstream.handlers._common import error_for
from kvstream.handlers.registry import Ready, RequestContext, handles
from kvstream.log.partition import PartitionLog, StagedAppend
from kvstream.log.writer import Operation
from kvstream.protocol import records
from kvstream.protocol.produce_response import PartitionAnswer, ProduceAnswer, RecordError

MAX_UNCOMPRESSED = 64 * 1024 * 1024

# One partition of a request: topic name, its answer (filled in by the append's callback), and
# its append and log (both None when refused before the writer).
_Result = tuple[str, PartitionAnswer, Operation[StagedAppend] | None, PartitionLog | None]


def _refused(name: str, index: int, code: ErrorCode, message: str | None = None) -> _Result:
    return (name, PartitionAnswer(index, code.value, error_message=message), None, None)


def _check(
    data: bytes | memoryview | None, max_message_bytes: int
) -> tuple[list[bytearray], list[records.BatchHeader]]:
    """Split and verify one partition's records; raise with the Kafka reason. Returns the
    batches and their headers.

    ``data`` is a view of the request frame (kvstream.protocol.produce_request), valid until the
    connection reads its next frame: the batches returned are the copies that live on."""
    if not data:
        raise records.InvalidRecordBatch("no record batches")
    view = memoryview(data)
    out: list[bytearray] = []
    headers: list[records.BatchHeader] = []
    for batch in records.split_batches(view):
        header = records.parse_header(batch)
        if header.size > max_message_bytes:
            raise _TooLarge(f"batch of {header.size} bytes > max.message.bytes {max_message_bytes}")
        if header.is_transactional or header.is_control:
            raise _TxnState("transactional and control batches need transactions (not yet)")
        if not records.verify_crc(batch):
            raise records.InvalidCrc("record batch CRC mismatch")
        records.validate_batch(batch, MAX_UNCOMPRESSED, header)
        out.append(bytearray(batch))
        headers.append(header)
    return out, headers


def _check_keys(batches: list[bytearray], topic: str, partition: int) -> None:
    """Compacted topics refuse records without a key (Kafka's LogValidator.validateKey)."""
    for batch in batches:
        for rec in records.iter_records(batch, MAX_UNCOMPRESSED):
            if rec.key is None:
                raise _InvalidRecords(_key_errors(batch, topic, partition))


def _key_errors(batch: bytearray, topic: str, partition: int) -> tuple[RecordError, ...]:
    """Every keyless record of a refused ``batch``, by its index in the batch (KIP-467)."""
    message = (
        f"Compacted topic cannot accept message without key in topic partition {topic}-{partition}"
    )
    return tuple(
        (index, message)
        for index, rec in enumerate(records.iter_records(batch, MAX_UNCOMPRESSED))
        if rec.key is None
    )


class _InvalidRecords(Exception):
    """A batch refused for some of its records (Kafka's RecordValidationException): the
    message is the one Kafka's LogValidator.processRecordErrors builds from them."""

    def __init__(self, errors: tuple[RecordError, ...]) -> None:
        shown = ", ".join(
            f"RecordError(batchIndex={index}, message="
            + ("null" if message is None else f"'{message}'")
            + ")"
            for index, message in errors[:3]
        )
        super().__init__(
            f"One or more records have been rejected due to {len(errors)} record errors in "
            f"total, and only showing the first three errors at most: [{shown}]"
        )
        self.errors = errors


class _TooLarge(Exception):
    pass


class _TxnState(Exception):
    pass


def _code(exc: BaseException) -> ErrorCode:
    if isinstance(exc, _TooLarge):
        return ErrorCode.message_too_large
    if isinstance(exc, _TxnState):
        return ErrorCode.invalid_txn_state
    if isinstance(exc, _InvalidRecords):
        return ErrorCode.invalid_record
    return error_for(exc)


@handles(0, versions=(3, 12))
def produce(ctx: RequestContext, req: Any) -> Ready:
    """Validate and submit synchronously, in request order; answer from the commit's callback.

    A plain function, not a coroutine: the connection calls it as it reads each request, so
    pipelined produces from one producer reach the writer in the order they were sent (trio
    does not promise FIFO task scheduling, and idempotent sequences depend on the order). The
    answer is a `Ready` completed by the writer's callbacks once every partition's operation
    finished: no task per request.
    """
    broker = ctx.broker
    logs = broker.logs
    acks = int(req.acks)
    results: list[_Result] = []
    for topic_data in req.topic_data:
        name = topic_data.name
        topic = logs.topic(name)
        for pdata in topic_data.partition_data:
            index = int(pdata.index)
            if acks not in (-1, 0, 1):
                results.append(_refused(name, index, ErrorCode.invalid_required_acks))
                continue
            plog = logs.partition(topic, index) if topic is not None else None
            if topic is None or plog is None:
                results.append(_refused(name, index, ErrorCode.unknown_topic_or_partition))
                continue
            config = broker.topic_configs(topic)
            try:
                batches, headers = _check(pdata.records, config.max_message_bytes)
                if config.compacts:
                    _check_keys(batches, name, index)
            except (records.InvalidRecordBatch, _TooLarge, _TxnState) as exc:
                results.append(_refused(name, index, _code(exc), str(exc)))
                continue
            except _InvalidRecords as exc:
                # as Kafka's ReplicaManager answers a RecordValidationException: the record
                # errors, their summary as the message, and the partition's log start offset
                part = PartitionAnswer(
                    index,
                    ErrorCode.invalid_record.value,
                    log_start_offset=plog.log_start_offset,
                    error_message=str(exc),
                    record_errors=exc.errors,
                )
                results.append((name, part, None, None))
                continue
            op = broker.writer.submit(
                logs.append_op(
                    plog, batches, log_append_time=config.log_append_time, headers=headers
                )
            )
            results.append((name, PartitionAnswer(index), op, plog))
    return _respond(acks, results)


def _respond(acks: int, results: list[_Result]) -> Ready:
    ready = Ready()
    if acks == 0:
        ready.set(None)
        return ready
    answer = ProduceAnswer()  # throttle_time_ms 0: kvstream has no quotas
    pending: list[tuple[PartitionAnswer, PartitionLog, Operation[StagedAppend]]] = []
    for name, part, op, plog in results:
        answer.add(name, part)
        if op is not None and plog is not None:
            pending.append((part, plog, op))
    if not pending:
        ready.set(answer)
        return ready
    left = len(pending)

    def finished(part: PartitionAnswer, plog: PartitionLog, op: Completion[StagedAppend]) -> None:
        nonlocal left
        try:
            if op.error is not None:
                raise op.error
            appended = op.value
            if appended is None:
                raise RuntimeError("append finished without a result")
            part.base_offset = appended.base_offset
            part.log_append_time_ms = appended.log_append_time
            part.log_start_offset = plog.log_start_offset
        except Exception as exc:  # this partition's error; the request is always answered
            part.error_code, part.error_message = _code(exc).value, str(exc)
        left -= 1
        if left == 0:
            ready.set(answer)

    for part, plog, op in pending:
        op.on_done(partial(finished, part, plog))
    return ready
