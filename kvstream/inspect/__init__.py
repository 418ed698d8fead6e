"""kvstream-inspect: the offline reader of a data directory (see kvstream/inspect/cli.py)."""
