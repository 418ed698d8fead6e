"""kvstream-inspect: the offline reader of a data directory.

OWNS: the package's public entry points: :func:`check_store` (the problems of a data
directory, empty when healthy; the integration fixture calls it) and the command line
(``kvstream-inspect``, ``python -m kvstream.inspect``: kvstream/inspect/cli.py).
MUST NOT KNOW: trio, sockets, the broker; it never imports them and never writes to the store
it reads. Modules: read (open read-only, decode into dataclasses), check (integrity rules),
copy (compacted copy), render (tables and JSON lines), cli (argparse and exit status).
"""

from __future__ import annotations

from kvstream.inspect.check import check_store

__all__ = ["check_store"]
