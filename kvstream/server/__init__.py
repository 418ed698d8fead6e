"""Trio network server: listeners, connections, in-order responses.

Owns sockets. Must not know storage layout or how any single API behaves.
"""
