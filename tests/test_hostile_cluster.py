"""Multi-worker set-up (#28 items 10, 13): bad TF_CONFIG, a port in use, a worker that never starts, other data.

Each is one line with a documented exit code, and a chief waiting for a worker
says so on stderr and stops on Ctrl-C or SIGTERM (exit 130) with nothing left
behind. The waiting and interrupt cases start real ``edgetl train`` processes on
127.0.0.1 (TensorFlow starts in each: slow lane).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import clicheck
import pytest
from cluster import free_ports
from edgetl.config import Strategy
from edgetl.errors import ConfigError
from edgetl.train import distribute

CLUSTER = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


@pytest.mark.parametrize(
    "tf_config, problem",
    [
        ({"cluster": ["127.0.0.1:1"], "task": {"type": "worker", "index": 0}}, "needs TF_CONFIG"),
        ({"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}, "is not host:port"),
        (
            {"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}},
            "'127.0.0.1' is not host:port",
        ),
        ({"cluster": {"worker": ["h:70000"]}, "task": {"type": "worker", "index": 0}}, "'h:70000' is not host:port"),
        ({"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 1}}, "an address is listed twice"),
        ({"cluster": CLUSTER, "task": {"type": "worker", "index": 5}}, "needs TF_CONFIG"),
        ({"cluster": CLUSTER, "task": {"type": "worker", "index": "x"}}, "needs TF_CONFIG"),
        ({"cluster": CLUSTER, "task": None}, "needs TF_CONFIG"),
        ([1, 2], "needs TF_CONFIG"),
    ],
    ids=[
        "cluster-list",
        "workers-string",
        "no-port",
        "port-range",
        "twice",
        "index",
        "index-text",
        "task-null",
        "list",
    ],
)
def test_malformed_tf_config_is_one_config_error(
    monkeypatch: pytest.MonkeyPatch, tf_config: object, problem: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(")):
        distribute.worker_from_env(Strategy.MULTI_WORKER)
    data = tmp_path / "d"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
    message = clicheck.fails(clicheck.run("train", data, "-o", tmp_path / "run", "--strategy", "multi-worker"), 2)
    assert problem in message or "needs TF_CONFIG" in message
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


def _chief(tmp_path: Path, fm_folder: Path, ports: list[int], **env: str) -> subprocess.Popen:
    hosts = [f"127.0.0.1:{p}" for p in ports]
    environ = {
        **os.environ,
        "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": 0}}),
        **env,
    }
    args = [sys.executable, "-m", "edgetl", "train", str(fm_folder), "-o", str(tmp_path / "run"), "--strategy"]
    args += ["multi-worker", "--weights", "none", "--alpha", "0.35", "--image-size", "32", "--max-per-class", "4"]
    return subprocess.Popen(args, env=environ, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)


def _wait_for_line(proc: subprocess.Popen, text: str) -> list[str]:
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError("".join(lines[-20:]))


def _gone(tmp_path: Path) -> bool:
    """No run folder and, once the watchdog has run, no partial folder (polled: it removes it after the chief died)."""
    for _ in range(100):
        if not list(tmp_path.glob(".run*")):
            break
        time.sleep(0.1)
    return not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_chief_waiting_for_a_worker_says_so_and_stops_on_a_signal(
    tmp_path: Path, fm_folder: Path, sig: signal.Signals
) -> None:
    ports = free_ports(2)
    proc = _chief(tmp_path, fm_folder, ports, EDGETL_WORKER_TIMEOUT="300")
    _wait_for_line(proc, f"chief: waiting for worker 1 at 127.0.0.1:{ports[1]}")
    if sig == signal.SIGINT:
        proc.send_signal(sig)  # Ctrl-C, or kill -INT PID
    else:
        os.killpg(proc.pid, sig)  # systemctl stop / kill -TERM -PGID: every process of the group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT, err[-2000:]  # the default action: a shell reports 130
    assert "Traceback" not in err
    assert _gone(tmp_path)


@pytest.mark.slow
def test_a_worker_that_never_starts_ends_the_wait_with_one_line(tmp_path: Path, fm_folder: Path) -> None:
    ports = free_ports(2)
    proc = _chief(tmp_path, fm_folder, ports, EDGETL_WORKER_TIMEOUT="5")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGINT, err[-2000:]  # interrupted by its watchdog: 130 in a shell
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: the cluster did not form within 5 s: worker 1 at 127.0.0.1:{ports[1]} never started; start every "
        "worker with the same TF_CONFIG cluster (or raise EDGETL_WORKER_TIMEOUT)"
    ]
    assert _gone(tmp_path)


@pytest.mark.slow
def test_a_port_in_use_is_one_line(tmp_path: Path, fm_folder: Path) -> None:
    ports = free_ports(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[0]))
        holder.listen()
        proc = _chief(tmp_path, fm_folder, ports)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"port {ports[0]} of this worker (127.0.0.1:{ports[0]} in TF_CONFIG)" in errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


@pytest.mark.slow
def test_workers_with_different_data_both_stop_with_one_line(tmp_path: Path, fm_folder: Path) -> None:
    import shutil

    other = Path(shutil.copytree(fm_folder, tmp_path / "other"))
    first = sorted(os.listdir(other))[0]
    (other / first).rename(other / f"zz_{first}")  # worker 1's copy names a class otherwise
    ports = free_ports(2)
    hosts = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    for index, data in enumerate((fm_folder, other)):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}),
        }
        args = [sys.executable, "-m", "edgetl", "train", str(data), "-o", str(tmp_path / f"run{index}")]
        args += ["--strategy", "multi-worker", "--weights", "none", "--alpha", "0.35", "--image-size", "32"]
        args += ["--max-per-class", "4"]
        procs.append(subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path))
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 3, err[-2000:]
        assert "read data other than the chief's" in err and "Traceback" not in err


def _wrapped_interrupt(*args: object, **kwargs: object) -> None:
    """What TensorFlow's graph building did with Ctrl-C in 2 of 16 tries: caught it and raised its own error."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises here
    except KeyboardInterrupt:
        raise RuntimeError("Exception encountered when calling layer 'quant_conv': KeyboardInterrupt") from None


def _plain_bug(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug, not an interrupt")


def test_an_interrupt_wrapped_in_another_exception_still_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgetl.cli import train as commands  # the name the command calls

    monkeypatch.setattr(commands, "install_imagenet_weights", _wrapped_interrupt)
    result = clicheck.run("weights", "install")
    assert result.exit_code == 130 and result.stderr.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in result.output and result.stdout == ""
    monkeypatch.setattr(commands, "install_imagenet_weights", _plain_bug)  # variant: no Ctrl-C: a bug stays visible
    assert isinstance(clicheck.run("weights", "install").exception, RuntimeError)
