"""Command line: `kvstream serve [server.properties] [--override key=value ...]`.

OWNS: argument parsing (``--log-level`` takes Python's level names, in any letter case), logging
set-up, and turning configuration errors into one clear line and exit status 2 (a
storage.engine that does not match the data dir included), other start-up failures (a listener
that cannot be bound, a data directory another broker holds, a store that cannot open) into one
clear line and exit status 1.
MUST NOT KNOW: anything the broker does after start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

import trio

from kvstream import __version__
from kvstream.config import ConfigError, load_config

LOG_LEVELS = list(logging.getLevelNamesMapping())
"""Python's level names: CRITICAL, FATAL, ERROR, WARN, WARNING, INFO, DEBUG, NOTSET."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvstream", description="Kafka-compatible broker")
    parser.add_argument("--version", action="version", version=f"kvstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("config", nargs="?", help="server.properties file (Kafka's format)")
    serve.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config key, after the file (repeatable)",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help=f"log level, one of {', '.join(LOG_LEVELS)} (any letter case; default INFO)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.getLevelNamesMapping()[args.log_level],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config, args.override)
    except ConfigError as exc:
        print(f"kvstream: configuration error: {exc}", file=sys.stderr)
        return 2

    with _without_hypothesis():
        from kvstream.broker import run_broker
    from kvstream.log.manager import StoreFormatError
    from kvstream.server.listener import BindError
    from kvstream.storage.base import StorageError

    fatal = (BindError, StoreFormatError, StorageError, OSError)
    try:
        trio.run(run_broker, config)
    except fatal as exc:
        return _cannot_start(exc)
    except BaseExceptionGroup as group:
        matched, _rest = group.split(fatal)
        if matched is None:
            raise
        return _cannot_start(_leaf(matched))
    except KeyboardInterrupt:
        pass
    return 0


@contextlib.contextmanager
def _without_hypothesis() -> Iterator[None]:
    """Import the broker as if Hypothesis were not installed (it is, wherever the test extras are).

    kio imports Hypothesis at import time when it can, to register strategies for its types, and
    importing Hypothesis runs trio's plugin, which makes trio's scheduler deterministic for tests
    (a sort and a shuffle of every batch of runnable tasks) and pulls in pytest: a slower start and
    more memory for nothing (docs/design.md, "No Hypothesis in the broker process"). The block
    only covers the import, and only when nothing in this process has imported Hypothesis yet.
    """
    if "hypothesis" in sys.modules:
        yield
        return
    sys.modules["hypothesis"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("hypothesis", 0) is None:
            del sys.modules["hypothesis"]


def _cannot_start(exc: BaseException) -> int:
    """One line on stderr; exit status 2 when the configuration must change (storage.engine
    does not match the data dir), else 1."""
    from kvstream.storage.base import EngineMismatchError

    print(f"kvstream: cannot start: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, EngineMismatchError) else 1


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
