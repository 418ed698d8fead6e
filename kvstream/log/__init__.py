"""Partition logs, producer state, topic metadata and the group-commit writer.

Owns offsets, batches on disk and the durable write path. Must not know sockets or the wire
protocol's request/response messages.
"""
