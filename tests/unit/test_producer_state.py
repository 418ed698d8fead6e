"""Idempotent producer state (kvstream.log.producer_state): every rule of its docstring, which
mirrors Kafka's ProducerStateManager/ProducerAppendInfo, and the stored value layout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstream.log.producer_state import (
    INT32_MAX,
    NUM_BATCHES_TO_RETAIN,
    BatchMetadata,
    ProducerEntry,
    Verdict,
    check,
    in_sequence,
)


def _meta(first_seq: int, last_seq: int, first_offset: int | None = None) -> BatchMetadata:
    offset = first_seq * 10 if first_offset is None else first_offset
    return BatchMetadata(first_seq, last_seq, offset, offset + (last_seq - first_seq), 1000)


def _entry(epoch: int, *spans: tuple[int, int]) -> ProducerEntry:
    entry = ProducerEntry()
    for first, last in spans:
        entry.record(epoch, _meta(first, last))
    return entry


def _apply(entry: ProducerEntry, epoch: int, first: int, last: int) -> Verdict:
    """check(), then record on APPEND, as the partition log does."""
    verdict, _ = check(entry, epoch, first, last)
    if verdict is Verdict.APPEND:
        entry.record(epoch, _meta(first, last))
    return verdict


# -- no state --------------------------------------------------------------------------------


@pytest.mark.parametrize("first_seq", [0, 1, 17, INT32_MAX])
@pytest.mark.parametrize("epoch", [0, 3, 32767])
def test_no_state_accepts_any_sequence(epoch: int, first_seq: int) -> None:
    assert check(None, epoch, first_seq, first_seq) == (Verdict.APPEND, None)


def test_empty_entry_accepts_any_sequence() -> None:
    assert check(ProducerEntry(), 0, 42, 50) == (Verdict.APPEND, None)
    assert check(ProducerEntry(epoch=2), 2, 42, 50) == (Verdict.APPEND, None)


# -- duplicates ------------------------------------------------------------------------------


def test_duplicate_of_each_of_the_last_five_batches_returns_its_metadata() -> None:
    entry = _entry(0, *[(i * 3, i * 3 + 2) for i in range(NUM_BATCHES_TO_RETAIN)])
    for i in range(NUM_BATCHES_TO_RETAIN):
        verdict, dup = check(entry, 0, i * 3, i * 3 + 2)
        assert verdict is Verdict.DUPLICATE
        assert dup == _meta(i * 3, i * 3 + 2)
    assert len(entry.batches) == NUM_BATCHES_TO_RETAIN


def test_sixth_oldest_batch_is_no_longer_a_duplicate() -> None:
    spans = [(i, i) for i in range(NUM_BATCHES_TO_RETAIN + 1)]
    entry = _entry(0, *spans)
    assert len(entry.batches) == NUM_BATCHES_TO_RETAIN
    assert entry.batches[0] == _meta(1, 1)
    # The oldest one (sequence 0) was forgotten: now it is simply out of order.
    assert check(entry, 0, 0, 0) == (Verdict.OUT_OF_ORDER, None)
    assert check(entry, 0, 1, 1) == (Verdict.DUPLICATE, _meta(1, 1))


def test_duplicate_must_match_first_and_last_sequence() -> None:
    entry = _entry(0, (0, 4), (5, 9))
    assert check(entry, 0, 5, 9)[0] is Verdict.DUPLICATE
    assert check(entry, 0, 5, 8)[0] is Verdict.OUT_OF_ORDER
    assert check(entry, 0, 0, 9)[0] is Verdict.OUT_OF_ORDER


def test_duplicate_needs_the_same_epoch() -> None:
    entry = _entry(1, (0, 0), (1, 1))
    # A newer epoch starting at 0 is a fresh batch, not a duplicate of epoch 1's sequence 0.
    assert check(entry, 2, 0, 0) == (Verdict.APPEND, None)
    # An older epoch is fenced even if its sequences match.
    assert check(entry, 0, 0, 0) == (Verdict.INVALID_EPOCH, None)


# -- epochs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first_seq", [0, 2, 3])
def test_older_epoch_is_invalid(first_seq: int) -> None:
    entry = _entry(5, (0, 1), (2, 2))
    assert check(entry, 4, first_seq, first_seq) == (Verdict.INVALID_EPOCH, None)
    assert check(entry, 0, first_seq, first_seq) == (Verdict.INVALID_EPOCH, None)


def test_new_epoch_must_start_at_zero() -> None:
    entry = _entry(0, (0, 9))
    assert check(entry, 1, 10, 10) == (Verdict.OUT_OF_ORDER, None)
    assert check(entry, 1, 1, 1) == (Verdict.OUT_OF_ORDER, None)
    assert check(entry, 1, 0, 0) == (Verdict.APPEND, None)
    assert check(entry, 7, 0, 3) == (Verdict.APPEND, None)


def test_new_epoch_may_start_anywhere_when_no_epoch_yet() -> None:
    entry = ProducerEntry()
    assert entry.epoch == -1
    assert check(entry, 0, 10, 10) == (Verdict.APPEND, None)
    assert check(entry, 3, 99, 100) == (Verdict.APPEND, None)


def test_new_epoch_clears_the_previous_epochs_batches() -> None:
    entry = _entry(0, (0, 0), (1, 1))
    assert _apply(entry, 1, 0, 0) is Verdict.APPEND
    assert entry.epoch == 1
    assert list(entry.batches) == [_meta(0, 0)]
    assert check(entry, 1, 1, 1) == (Verdict.APPEND, None)
    assert check(entry, 1, 2, 2) == (Verdict.OUT_OF_ORDER, None)


# -- sequence order --------------------------------------------------------------------------


def test_in_sequence_accepts_next_and_rejects_gaps_and_repeats() -> None:
    entry = _entry(0, (0, 4))
    assert check(entry, 0, 5, 5) == (Verdict.APPEND, None)
    assert check(entry, 0, 6, 6) == (Verdict.OUT_OF_ORDER, None)
    assert check(entry, 0, 4, 4) == (Verdict.OUT_OF_ORDER, None)
    assert check(entry, 0, 3, 4) == (Verdict.OUT_OF_ORDER, None)
    assert check(entry, 0, 0, 3) == (Verdict.OUT_OF_ORDER, None)


def test_sequence_wraps_at_int32_max() -> None:
    entry = _entry(0, (INT32_MAX - 4, INT32_MAX))
    assert entry.last_seq == INT32_MAX
    assert check(entry, 0, 0, 4) == (Verdict.APPEND, None)
    assert check(entry, 0, 1, 4) == (Verdict.OUT_OF_ORDER, None)
    assert _apply(entry, 0, 0, 4) is Verdict.APPEND
    assert check(entry, 0, 5, 5) == (Verdict.APPEND, None)
    # A batch spanning the wrap: last sequence below the first.
    wrapping = _entry(0, (INT32_MAX - 10, INT32_MAX - 3))
    assert _apply(wrapping, 0, INT32_MAX - 2, 1) is Verdict.APPEND
    assert check(wrapping, 0, INT32_MAX - 2, 1)[0] is Verdict.DUPLICATE
    assert check(wrapping, 0, 2, 2) == (Verdict.APPEND, None)


def test_in_sequence_function() -> None:
    assert in_sequence(-1, 0)
    assert in_sequence(0, 1)
    assert in_sequence(INT32_MAX, 0)
    assert not in_sequence(5, 5)
    assert not in_sequence(5, 7)
    assert not in_sequence(INT32_MAX - 1, 0)


def test_a_run_of_in_order_batches_then_retries() -> None:
    entry = ProducerEntry()
    for seq in range(0, 40, 4):
        assert _apply(entry, 0, seq, seq + 3) is Verdict.APPEND
    assert entry.last_seq == 39
    for seq in range(20, 40, 4):  # the last five are duplicates
        assert check(entry, 0, seq, seq + 3)[0] is Verdict.DUPLICATE
    assert check(entry, 0, 16, 19)[0] is Verdict.OUT_OF_ORDER


def test_copy_is_independent() -> None:
    entry = _entry(0, (0, 0))
    clone = entry.copy()
    clone.record(0, _meta(1, 1))
    clone.record(1, _meta(0, 0))
    assert entry.epoch == 0
    assert list(entry.batches) == [_meta(0, 0)]
    assert clone.batches.maxlen == NUM_BATCHES_TO_RETAIN


# -- stored layout ---------------------------------------------------------------------------

_int32 = st.integers(0, INT32_MAX)
_int64 = st.integers(-(2**63), 2**63 - 1)
_batch_meta = st.builds(BatchMetadata, _int32, _int32, _int64, _int64, _int64)


@given(epoch=st.integers(-1, 2**15 - 1), batches=st.lists(_batch_meta, max_size=8))
def test_encode_decode_round_trip(epoch: int, batches: list[BatchMetadata]) -> None:
    entry = ProducerEntry(epoch)
    for b in batches:
        entry.batches.append(b)
    raw = entry.encode()
    assert len(raw) == 3 + 32 * len(entry.batches)
    back = ProducerEntry.decode(raw)
    assert back.epoch == epoch
    assert list(back.batches) == list(entry.batches)
    assert back.batches.maxlen == NUM_BATCHES_TO_RETAIN
    assert back.encode() == raw


def test_encode_empty_entry() -> None:
    assert ProducerEntry().encode() == b"\xff\xff\x00"
    assert ProducerEntry.decode(b"\xff\xff\x00") == ProducerEntry()


@given(
    ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30), st.integers(0, 3)), max_size=40)
)
def test_decoded_state_decides_like_the_original(ops: list[tuple[int, int, int]]) -> None:
    entry = ProducerEntry()
    for epoch, first, span in ops:
        _apply(entry, epoch, first, first + span)
        back = ProducerEntry.decode(entry.encode())
        for probe_epoch in range(4):
            for probe in range(0, 34, 3):
                assert check(back, probe_epoch, probe, probe + 1) == check(
                    entry, probe_epoch, probe, probe + 1
                )
