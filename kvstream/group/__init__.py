"""Consumer groups: the pure classic-protocol state machine and its Trio coordinator shell.

OWNS: `classic` (Kafka's classic group protocol as `(state, event) -> (state, outputs)`, no I/O)
and `coordinator` (the shell: request parking, timers, committed offsets, persistence).
MUST NOT KNOW: sockets or wire encoding (handlers translate requests into coordinator calls).

The registry in `coordinator` maps a group id to one group object whose `kind` names its
protocol ("classic" today; a KIP-848 "consumer" group type is added beside it), so a group id
in use by one protocol refuses the other.
"""
