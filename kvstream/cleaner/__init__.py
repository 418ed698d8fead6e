"""The log cleaner (cleanup.policy=compact): Kafka's log compaction over the partition logs.

OWNS: compaction, in layers that import only downward:

- ``policy``: which topics are compacted, their compaction configs, the dirty measure and the
  decision to clean a partition (pure; no trio, no store);
- ``passes``: one pass over one partition in the store: offset map, which records survive,
  batch rewrites and removals as staged writes (no trio; batch bytes are
  kvstream/protocol/batch_rewrite.py's);
- ``worker`` and ``remote_read``: the pass's read phases in a worker process, and that
  process's reads of a store only the broker can open (no trio);
- ``task``: the Trio shell (``LogCleaner``): rounds, the worker process's parent end, each
  slice submitted to the group-commit writer.

MUST NOT KNOW: sockets, wire messages, handlers. Imports nothing eagerly (the pure modules must
stay importable without trio).
"""
