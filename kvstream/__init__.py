"""kvstream: a Kafka-compatible message broker storing partitions as ordered key ranges.

Owns the package version. Must not import any submodule eagerly (the offline tool and the
sans-IO layers import only what they use).
"""

__version__ = "0.1.0"
