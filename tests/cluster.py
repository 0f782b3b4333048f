"""Helpers for the tests that start a real two-worker ``tf.distribute`` cluster on loopback."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports free right now (bound, read, released), for a cluster's TF_CONFIG."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
