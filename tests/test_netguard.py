"""No test touches the network: the guard in tests/netguard blocks it here and in subprocesses, loudly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from edgetl_netguard import LOG_ENV, NetworkBlockedError

DOWNLOAD = (
    "import urllib.request\nurllib.request.urlopen('https://storage.googleapis.com/tensorflow/x.h5', timeout=5)\n"
)


@pytest.mark.expects_blocked_network
def test_a_connection_to_the_internet_fails_with_a_clear_message() -> None:
    with pytest.raises(NetworkBlockedError, match=r"blocked a connection to 192\.0\.2\.1:443: tests run offline"):
        socket.create_connection(("192.0.2.1", 443), timeout=5)
    with pytest.raises(NetworkBlockedError, match="blocked a name look-up of 'storage.googleapis.com'"):
        socket.getaddrinfo("storage.googleapis.com", 443)


@pytest.mark.expects_blocked_network
def test_subprocesses_are_blocked_too_and_the_attempt_is_logged() -> None:
    log = Path(os.environ[LOG_ENV])
    before = log.read_text() if log.exists() else ""
    result = subprocess.run([sys.executable, "-c", DOWNLOAD], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "edgetl netguard: blocked a name look-up of 'storage.googleapis.com': tests run offline" in result.stderr
    assert "storage.googleapis.com" in log.read_text()[len(before) :]


def test_loopback_and_unix_sockets_still_work(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        threading.Thread(target=lambda: server.accept()[0].sendall(b"ok"), daemon=True).start()
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5) as client:
            assert client.recv(2) == b"ok"
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)


def test_a_test_that_swallows_the_error_still_fails(tmp_path: Path) -> None:
    """The autouse fixture reads the guard's log: a blocked attempt fails the test even when caught."""
    (tmp_path / "test_sneaky.py").write_text(
        "import subprocess, sys\n"
        "def test_sneaky():\n"
        f"    subprocess.run([sys.executable, '-c', {DOWNLOAD!r}], capture_output=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ["PYTHONPATH"]])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "this test tried to reach the network" in result.stdout and "storage.googleapis.com" in result.stdout
