"""Changes to stored batches outside the append path: a batch rewritten in place, or removed.

OWNS: :class:`BatchChange` (one batch replaced by rebuilt bytes and their index entry, or
removed), :class:`BatchChanges` (what the log manager is handed to stage: a cleaner slice
satisfies it) and :func:`stage_batch_changes`, which turns a partition's changes into batch
and index key puts and deletes, skipping those wholly below the log start so a change never
brings back a batch that retention or DeleteRecords removed.
MUST NOT KNOW: trio, how the changes were decided (the log cleaner, kvstream/cleaner/, which
sits above this layer), the bytes of a batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kvstream.log import keys
from kvstream.log.partition import IndexEntry
from kvstream.log.staging import StagedWrites

__all__ = ["BatchChange", "BatchChanges", "stage_batch_changes"]


@dataclass(frozen=True, slots=True)
class BatchChange:
    """One batch: replaced by ``batch`` (with ``index``), or removed (both None). Base and
    last offset are the batch's own, kept by a rewrite (offsets never change)."""

    base_offset: int
    last_offset: int
    batch: bytes | None
    index: IndexEntry | None


class BatchChanges(Protocol):
    """Changes to one partition's batches, decided elsewhere (a cleaner slice)."""

    @property
    def changes(self) -> Sequence[BatchChange]: ...


def stage_batch_changes(
    staged: StagedWrites,
    topic_id: uuid.UUID,
    partition: int,
    changes: Iterable[BatchChange],
    log_start_offset: int | None = None,
) -> list[BatchChange]:
    """Stage the batch and index puts and deletes of ``changes``; returns the changes staged.

    Changes to batches wholly below ``log_start_offset`` (the log start as staged at that
    moment: retention or DeleteRecords may have removed them since the changes were decided)
    are skipped."""
    applied: list[BatchChange] = []
    for ch in changes:
        if log_start_offset is not None and ch.last_offset < log_start_offset:
            continue
        bkey = keys.batch_key(topic_id, partition, ch.base_offset)
        ikey = keys.index_key(topic_id, partition, ch.base_offset)
        if ch.batch is None or ch.index is None:
            staged.delete(bkey)
            staged.delete(ikey)
        else:
            staged.put(bkey, ch.batch)
            staged.put(ikey, ch.index.encode())
        applied.append(ch)
    return applied
