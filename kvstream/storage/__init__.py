"""Ordered key-value storage: the narrow interface and its backends.

Owns bytes keys and values in order. Must not know Kafka, topics, offsets or trio.
"""
