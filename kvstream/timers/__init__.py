"""Timers: the broker's one timer service and the timer vocabulary of the pure state machines.

OWNS: `service` (the Trio side: `Timers`, one heap and one task for every timer of the broker,
and `KeyedTimers`, the keyed replace-or-cancel layer the coordinators' shells use) and
`outputs` (`SetTimer` and `CancelTimer`, the outputs a pure state machine asks for a timer with;
no trio, so the state machines import it and stay trio-free).
MUST NOT KNOW: what a timer is for (Fetch long polls, group sessions and rebalances; later
transaction timeouts, broker sessions, SASL re-authentication deadlines).

This package's ``__init__`` imports nothing, so importing `outputs` does not import trio.
"""
