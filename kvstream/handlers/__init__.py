"""One module per Kafka API; the registry they declare themselves in computes ApiVersions.

Owns request -> response behaviour. Must not touch sockets or storage keys directly.
"""
