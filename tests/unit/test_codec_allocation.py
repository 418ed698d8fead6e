"""Forged lengths never reach kio's native reader (it aborts the process on a huge allocation).

The frame below is a Fetch v13 request from a fuzz run whose topic array claims 2.3e10 items:
kio 0.6.5 tried to allocate 170 GB and the Rust allocator aborted the interpreter. The decode
runs in a subprocess so that a regression fails this test instead of killing pytest. Fetch
bodies are now read by kvstream.protocol.fetch_request, which refuses the frame itself; the
layout check that guards kio's reader for every other API is fuzzed below with its header.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstream.protocol.codec import ProtocolError, UnsupportedRequest, decode_request
from kvstream.protocol.tagged import check_layout

ROOT = Path(__file__).resolve().parents[2]
FORGED_FETCH = bytes.fromhex(
    "0001000d000003f8000b746573742d636c69656e7400ffffffff000001b83274833bf400000001032000"
    "000100000000ffffff8255631364dc80c1ff02000000000000000000000000000012340200000002ffff"
    "ffff000000000000002affffffffffffff1e028726ffffffffff001000000000010100"
)
SERVED = {1: (4, 17), 0: (3, 12), 3: (0, 12)}


def test_forged_array_count_is_a_protocol_error_not_an_abort() -> None:
    code = (
        "import sys\n"
        "from kvstream.protocol.codec import decode_request, ProtocolError\n"
        f"frame = bytes.fromhex({FORGED_FETCH.hex()!r})\n"
        "try:\n"
        f"    decode_request(frame, {SERVED!r})\n"
        "except ProtocolError as exc:\n"
        "    print('refused:', exc)\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "malformed API 1 v13 request" in done.stdout


def test_check_layout_measures_a_valid_request() -> None:
    from kio.index import load_request_schema

    header_type = load_request_schema(1, 13).__header_schema__
    header_size = check_layout(FORGED_FETCH[:22], header_type)
    assert header_size == 22  # api key, version, correlation id, client id "test-client", tags


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([FORGED_FETCH[:22]]),
    body=st.binary(max_size=120),
)
def test_random_fetch_bodies_are_refused_or_decoded(prefix: bytes, body: bytes) -> None:
    with contextlib.suppress(ProtocolError, UnsupportedRequest):
        decode_request(prefix + body, SERVED)
