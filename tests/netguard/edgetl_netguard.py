"""No test touches the network: every socket connection except to loopback (or an AF_UNIX path) is refused.

Installed twice by ``tests/conftest.py``: in the pytest process itself, and in every Python
subprocess a test starts, through ``sitecustomize.py`` in this folder, which conftest puts on
``PYTHONPATH`` (subprocesses inherit it unless a test hands them an environment built from
nothing). What is blocked: ``socket.connect``/``connect_ex``/``sendto`` to a non-loopback
address, and name look-ups (``getaddrinfo``, ``gethostbyname``) of anything but ``localhost``
and IP literals. A blocked attempt raises :class:`NetworkBlockedError` (an ``OSError``, so code
under test sees what an offline machine gives it), writes one line to stderr, and is appended to
the file named by ``$EDGETL_NETGUARD_LOG``, which conftest reads after every test: a blocked
attempt fails the test even when the code under test swallows the error. Native code that opens
sockets without Python (Chromium, C++ libraries) is not covered.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Any

LOG_ENV = "EDGETL_NETGUARD_LOG"
HINT = (
    "tests run offline: only loopback is allowed (use edgetl's offline weights, the imagenet_weights fixture, "
    "or a server on 127.0.0.1)"
)


class NetworkBlockedError(ConnectionRefusedError):
    """A test tried to reach a host other than loopback."""


def _is_loopback_host(host: Any) -> bool:
    if host in (None, "", "localhost", "localhost.localdomain", "ip6-localhost", "0.0.0.0", "::"):
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host == socket.gethostname():  # this machine's own name resolves from /etc/hosts
        return True
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _is_ip_literal(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


def _blocked(what: str) -> NetworkBlockedError:
    message = f"edgetl netguard: blocked {what}: {HINT}"
    print(message, file=sys.stderr, flush=True)
    log = os.environ.get(LOG_ENV)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"pid {os.getpid()}: {what}\n")
        except OSError:
            pass
    return NetworkBlockedError(message)


def _check_address(sock: socket.socket, address: Any, verb: str) -> None:
    family = getattr(sock, "family", None)
    if family not in (socket.AF_INET, socket.AF_INET6):  # AF_UNIX, AF_NETLINK...: local by nature
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_loopback_host(host):
        port = address[1] if isinstance(address, tuple) and len(address) > 1 else "?"
        raise _blocked(f"{verb} to {host}:{port}")


def install() -> None:
    """Patch the socket module of this process (idempotent)."""
    if getattr(socket, "_edgetl_netguard", False):
        return
    cls = socket.socket
    connect, connect_ex, sendto = cls.connect, cls.connect_ex, cls.sendto
    getaddrinfo, gethostbyname, gethostbyname_ex = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex

    def guarded_connect(self: socket.socket, address: Any) -> None:
        _check_address(self, address, "a connection")
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        _check_address(self, address, "a connection")
        return connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
        _check_address(self, args[-1], "a datagram")
        return sendto(self, data, *args)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not (_is_loopback_host(host) or _is_ip_literal(host)):
            raise _blocked(f"a name look-up of {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    def guarded_gethostbyname(host: str) -> str:
        if not (_is_loopback_host(host) or _is_ip_literal(host)):
            raise _blocked(f"a name look-up of {host!r}")
        return gethostbyname(host)

    def guarded_gethostbyname_ex(host: str) -> Any:
        if not (_is_loopback_host(host) or _is_ip_literal(host)):
            raise _blocked(f"a name look-up of {host!r}")
        return gethostbyname_ex(host)

    cls.connect, cls.connect_ex, cls.sendto = guarded_connect, guarded_connect_ex, guarded_sendto  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo
    socket.gethostbyname = guarded_gethostbyname
    socket.gethostbyname_ex = guarded_gethostbyname_ex
    socket._edgetl_netguard = True  # type: ignore[attr-defined]
