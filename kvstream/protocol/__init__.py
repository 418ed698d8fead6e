"""Sans-IO Kafka protocol: framing, request/response codec, record batches.

Owns bytes <-> messages. Must not know sockets, trio, storage or broker state.
"""
