"""Command line of kvstream-inspect (placeholder until the tool lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("kvstream-inspect: not implemented yet", file=sys.stderr)
    return 2
