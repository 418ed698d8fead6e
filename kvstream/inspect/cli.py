"""Command line of kvstream-inspect: ``kvstream-inspect [--json] DATA_DIR COMMAND [ARGS]``.

OWNS: argument parsing, which reading function each subcommand calls, writing its lines to
stdout, the progress bar of ``check`` (stderr, only when stderr is a terminal), and the exit
status: 0 done (``check``: healthy), 1 ``check`` found problems, 2 usage or input errors
(missing directory, not a kvstream store, unknown topic or group, a store that cannot be
opened), each reported as one line on stderr, never a traceback.
MUST NOT KNOW: key layouts or storage engines (kvstream/inspect/read.py), how rows look
(kvstream/inspect/render.py), trio, the broker.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from typing import NoReturn, TextIO

from kvstream import __version__
from kvstream.inspect import render
from kvstream.inspect.check import check
from kvstream.inspect.copy import copy_compact
from kvstream.inspect.read import InspectError, Inspector
from kvstream.storage.base import StorageError

PROG = "kvstream-inspect"

EPILOG = """\
The data directory comes first, then the command:
  kvstream-inspect DATA_DIR stat
  kvstream-inspect --json DATA_DIR partitions orders
  kvstream-inspect DATA_DIR dump orders --partition 0 --from 1000 --count 20
  kvstream-inspect DATA_DIR check

An LMDB store (the default engine) is opened read-only and may be inspected while the broker
runs. A LevelDB store can be opened by one process at a time: stop the broker first.
--json writes JSON lines (one object per line) and may also follow the command.
Exit status: 0 ok (check: healthy), 1 check found problems, 2 usage or input error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    json_flag = _Parser(add_help=False)
    json_flag.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="JSON lines (one object per line) instead of tables",
    )
    parser = _Parser(
        prog=PROG,
        description="Read a kvstream data directory offline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[json_flag],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("data_dir", metavar="DATA_DIR", help="the broker's log.dirs directory")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text, parents=[json_flag]
        )
        return made

    command("stat", "engine, format version, file size, used pages, topic and partition counts")
    command("topics", "topics with their ids, partition counts and config overrides")
    partitions = command(
        "partitions",
        "per partition: log start, high watermark, log end, batches, records, bytes, timestamps",
    )
    partitions.add_argument("topic", nargs="?", metavar="TOPIC", help="only this topic")
    dump = command("dump", "batches and their records, decoded")
    dump.add_argument("topic", metavar="TOPIC")
    dump.add_argument("--partition", type=_count, metavar="N", help="only partition N")
    dump.add_argument(
        "--from",
        dest="from_offset",
        type=_count,
        metavar="OFFSET",
        help="start at the batch holding OFFSET (default: the log start)",
    )
    dump.add_argument("--count", type=_count, metavar="N", help="at most N records per partition")
    command("groups", "consumer groups with committed offsets, and their total lag")
    offsets = command("offsets", "a group's committed offsets and lag per partition")
    offsets.add_argument("group", metavar="GROUP")
    producers = command("producers", "idempotent producer state (last five batches each)")
    producers.add_argument("topic", metavar="TOPIC")
    producers.add_argument("--partition", type=_count, metavar="N", help="only partition N")
    chk = command(
        "check",
        "CRCs, offset continuity, index entries, log start <= high watermark <= log end; "
        "exit status 1 when anything is wrong",
    )
    chk.add_argument(
        "--deep", action="store_true", help="also decode every record (decompresses every batch)"
    )
    chk.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    cp = command("copy", "a compacted copy of the store into an empty directory (backup)")
    cp.add_argument(
        "--compact",
        action="store_true",
        required=True,
        help="leave free pages out (required: the only kind of copy offered)",
    )
    cp.add_argument("dest", metavar="DEST", help="an empty or missing directory")
    return parser


class ProgressBar:
    """A one-line bar on ``stream``, redrawn at most every ``interval`` seconds."""

    def __init__(self, stream: TextIO, label: str, interval: float = 0.2) -> None:
        self.stream = stream
        self.label = label
        self.interval = interval
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        fraction = min(done / total, 1.0) if total > 0 else 1.0
        filled = int(fraction * 30)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
            f"{done / 1048576:.1f}/{total / 1048576:.1f} MiB"
        )
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _emit(lines: Iterable[str]) -> None:
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    if args.command == "copy":
        _emit(render.copy_lines(copy_compact(args.data_dir, args.dest), as_json))
        return 0
    with Inspector(args.data_dir) as ins:
        if args.command == "stat":
            _emit(render.stat_lines(ins.stat(), as_json))
        elif args.command == "topics":
            _emit(render.topics_lines(ins.topics(), as_json))
        elif args.command == "partitions":
            _emit(render.partitions_lines(ins.partitions(args.topic), as_json))
        elif args.command == "dump":
            batches = ins.dump(args.topic, args.partition, args.from_offset, args.count)
            _emit(render.dump_lines(batches, as_json))
        elif args.command == "groups":
            _emit(render.groups_lines(ins.groups(), as_json))
        elif args.command == "offsets":
            _emit(render.offsets_lines(ins.offsets(args.group), as_json))
        elif args.command == "producers":
            _emit(render.producers_lines(ins.producers(args.topic, args.partition), as_json))
        elif args.command == "check":
            bar = None
            if not args.no_progress and sys.stderr.isatty():
                bar = ProgressBar(sys.stderr, "check")
            try:
                checked = check(ins, deep=args.deep, progress=bar)
            finally:
                if bar is not None:
                    bar.clear()
            _emit(render.check_lines(checked, as_json))
            return 0 if checked.healthy else 1
        else:  # pragma: no cover - argparse only lets the commands above through
            raise AssertionError(args.command)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InspectError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"{PROG}: cannot read the store: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`... | head`): say nothing more, like other tools.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
