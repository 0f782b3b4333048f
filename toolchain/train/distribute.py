"""Which ``tf.distribute`` strategy trains, and what each worker of a cluster reads and writes.

``--strategy multi-worker`` is TensorFlow's ``MultiWorkerMirroredStrategy``: every
worker process (one per host, or several on one host with different ports) reads
the standard ``TF_CONFIG`` environment variable -- the cluster's ``host:port``
list and this process's task -- and gradients are all-reduced each step. Each
worker reads only its shard of the cached data (every W-th row, the same count
on every worker so all take the same number of steps). The chief (task ``chief``,
or ``worker`` 0 when the cluster has no chief) writes the run folder and its
checkpoints; every other worker checkpoints into its own hidden folder beside it
(the TensorFlow docs' advice: saving takes part in collectives, so all save, but
only the chief's copy is kept), which ``--resume`` reads back and a finished run
removes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgetl import log
from edgetl.config import Strategy, TrainConfig
from edgetl.errors import ConfigError, DataError, EdgeTLError


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the cluster: ``index`` of ``count`` input shards; ``chief`` writes the run."""

    index: int = 0
    count: int = 1
    chief: bool = True
    addresses: tuple[str, ...] = dataclasses.field(default=(), compare=False)  # every member's host:port, in order

    @property
    def name(self) -> str:
        return "chief" if self.chief else f"worker {self.index}"


def worker_from_env(strategy: Strategy) -> Worker:
    """This process's role from ``TF_CONFIG`` (``--strategy multi-worker`` only; otherwise the one worker).

    Raises:
        ConfigError: multi-worker without a usable ``TF_CONFIG``.
    """
    if strategy != Strategy.MULTI_WORKER:
        return Worker()
    raw = os.environ.get("TF_CONFIG", "")
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        kind, index = str(task["type"]), int(task["index"])
        members = [(k, i) for k in ("chief", "worker") for i in range(len(cluster.get(k, [])))]
        position = members.index((kind, index))
        addresses = tuple(str(cluster[k][i]) for k, i in members)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        raise ConfigError(
            "--strategy multi-worker needs TF_CONFIG, e.g. "
            '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\' '
            "on each host (index 0 on the first, 1 on the second)"
        ) from None
    bad = [a for a in addresses if not _host_port(a)]
    if bad or len(set(addresses)) != len(addresses):
        what = f"{bad[0]!r} is not host:port" if bad else "an address is listed twice"
        raise ConfigError(f"TF_CONFIG's cluster: {what}; list each worker once as host:port (port 1-65535)")
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return Worker(index=position, count=len(members), chief=chief, addresses=addresses)


def _host_port(address: str) -> Optional[tuple[str, int]]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def make_strategy(config: TrainConfig, gpus: int, cleanup: Optional[Path] = None) -> Any:
    """The strategy for ``config.strategy`` on a machine with ``gpus`` GPUs (``auto``: mirrored when > 1).

    ``cleanup``: the run's partial folder, removed if the process is stopped while the cluster forms.
    """
    import tensorflow as tf

    if config.strategy == Strategy.MULTI_WORKER:
        strategy = _join_cluster(tf, worker_from_env(Strategy.MULTI_WORKER), cleanup)
        log.info(f"multi-worker: {strategy.num_replicas_in_sync} replica(s) in sync across the TF_CONFIG cluster")
        return strategy
    if config.strategy == Strategy.MIRRORED or (config.strategy == Strategy.AUTO and gpus > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _join_cluster(tf: Any, worker: Worker, cleanup: Optional[Path] = None) -> Any:
    """``MultiWorkerMirroredStrategy()`` with a watchdog: progress, a bound, and signals that work.

    TensorFlow's constructor blocks in native code until every worker has started:
    no Python runs meanwhile (no message, no signal handler), and it installs its own
    SIGTERM handler (a preemption notice), so SIGINT and SIGTERM did nothing for 480 s.
    For that call SIGINT gets its default action back (the process ends at once; a
    shell reports 130), and a forked watchdog process names the workers not yet
    listening every ``WAIT_REPORT_S`` seconds ("waiting for worker 1 at HOST:PORT"),
    turns a SIGTERM it receives (``systemctl stop`` signals every process of the unit;
    ``kill -TERM -PGID``) into SIGINT for this process, removes ``cleanup`` (this run's
    partial folder, nothing trained in it yet) when this process dies, and after
    ``$EDGETL_WORKER_TIMEOUT`` seconds (default 600) prints one ``Error:`` line and
    interrupts it the same way.

    Raises:
        EdgeTLError: this worker's port is in use, or TensorFlow refused the cluster.
    """
    host_port = _host_port(worker.addresses[worker.index])
    assert host_port is not None  # checked by worker_from_env
    try:
        with socket.socket(socket.AF_INET6 if ":" in host_port[0] else socket.AF_INET) as probe:
            probe.bind(("", host_port[1]))
    except OSError as exc:
        raise EdgeTLError(
            f"port {host_port[1]} of this worker ({worker.addresses[worker.index]} in TF_CONFIG) cannot be used "
            f"({exc.strerror or exc}); stop what holds it or give this worker another port in every worker's TF_CONFIG"
        ) from None
    timeout = float(os.environ.get("EDGETL_WORKER_TIMEOUT") or WORKER_TIMEOUT_S)
    sys.stderr.flush()
    done_r, done_w = os.pipe()
    parent, watcher = os.getpid(), os.fork()
    if watcher == 0:  # the watchdog: plain Python, no TensorFlow; never returns into the caller
        try:
            os.close(done_w)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches both: the worker dies, this one cleans up
            signal.signal(signal.SIGTERM, lambda *_: os.kill(parent, signal.SIGINT))  # TensorFlow swallows SIGTERM
            _watch(worker, done_r, parent, timeout, cleanup)
        finally:
            os._exit(0)
    os.close(done_r)
    handler = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except Exception as exc:  # noqa: BLE001 - TensorFlow's own error types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgeTLError(
            f"TensorFlow could not form the multi-worker cluster ({first[:200]}); check TF_CONFIG"
        ) from None
    finally:
        signal.signal(signal.SIGINT, handler)
        os.write(done_w, b"ok")
        os.close(done_w)
        os.waitpid(watcher, 0)


WORKER_TIMEOUT_S = 600.0
WAIT_REPORT_S = 10.0


def _watch(worker: Worker, done: int, parent: int, timeout: float, cleanup: Optional[Path]) -> int:
    """The watchdog's loop (see :func:`_join_cluster`); its exit code is not used."""
    started = time.monotonic()
    while True:
        ready, _, _ = select.select([done], [], [], WAIT_REPORT_S)
        if ready:
            if os.read(done, 2) != b"ok" and cleanup is not None:  # the worker died waiting: no trace of it
                shutil.rmtree(cleanup, ignore_errors=True)
            return 0
        waited, missing = time.monotonic() - started, _not_listening(worker)
        if waited >= timeout:
            line = (
                f"Error: the cluster did not form within {timeout:.0f} s: {', '.join(missing) or 'a worker'} never "
                "started; start every worker with the same TF_CONFIG cluster (or raise EDGETL_WORKER_TIMEOUT)\n"
            )
            os.write(2, line.encode())
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)
            os.kill(parent, signal.SIGINT)
            return 0
        if missing:
            text = f"{worker.name}: waiting for {', '.join(missing)} ({waited:.0f} s of {timeout:.0f} s)\n"
            os.write(2, text.encode())


def _not_listening(worker: Worker) -> list[str]:
    """The other members whose port does not accept a connection yet, as ``worker N at HOST:PORT``."""
    missing = []
    for i, address in enumerate(worker.addresses):
        target = _host_port(address)
        if i == worker.index or target is None:
            continue
        try:
            socket.create_connection(target, timeout=1.0).close()
        except OSError:
            missing.append(f"worker {i} at {address}")
    return missing


def check_same_data(strategy: Any, worker: Worker, fingerprint: str) -> None:
    """Refuse a cluster whose workers read different data (different splits would hang the collectives).

    The chief's number (derived from ``fingerprint``: its class names and split
    lists) is broadcast, each worker compares it with its own, and one more
    all-reduce sums the disagreements, so every worker stops with the same message
    instead of the others waiting forever on the one that stopped.

    Raises:
        DataError: the workers' data differ.
    """
    if worker.count == 1:
        return
    import tensorflow as tf

    mine = float(int(hashlib.sha256(fingerprint.encode("utf-8", "surrogateescape")).hexdigest()[:12], 16))
    chief = float(_from_chief(strategy, worker, [np.asarray([mine])])[0][0])
    flag = 0.0 if chief == mine else 1.0
    differ = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(flag)), axis=None)
    if float(differ) > 0:
        raise DataError(
            f"{worker.name}: {float(differ):.0f} worker(s) read data other than the chief's (class names or split "
            "lists differ); give every worker the same data folder contents and the same options"
        )


def shard(count: int, worker: Worker) -> np.ndarray:
    """The rows worker ``worker.index`` reads: every ``count``-th, equally many on every worker.

    Up to ``worker.count - 1`` rows are left out so no worker waits for another's
    last step (collectives need every worker in every step).
    """
    per = count // worker.count
    return np.arange(worker.index, per * worker.count, worker.count, dtype=np.int64)


def distribute(strategy: Any, worker: Worker, make: Any) -> Any:
    """``make()``'s dataset as the strategy feeds it: as is on one worker, per worker across a cluster.

    Across workers each builds its own pipeline (already sharded by index), so
    ``tf.data``'s auto-sharding is off and Keras takes each worker's batches as its share.
    """
    if worker.count == 1:
        return make()
    return strategy.distribute_datasets_from_function(lambda _context: make())


def barrier(strategy: Any, worker: Worker) -> None:
    """Wait for every worker (one all-reduce): none exits while the chief still writes the run.

    A worker that exits early stops its heartbeats and the chief's coordination
    service reports it as crashed.
    """
    if worker.count == 1:
        return
    import tensorflow as tf

    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def follow_chief(strategy: Any, worker: Worker, model: Any, record: dict[str, Any], start: int) -> int:
    """Make every worker continue from the chief's checkpoint: its epoch, early-stopping record and weights.

    Workers save their checkpoints one after another, so a cluster killed between
    two saves resumes with workers an epoch apart; each training on from its own
    checkpoint would run different step counts (a hang) or silently average
    different models. The chief's values are broadcast (an all-reduce in which the
    other workers add zeros) into ``model`` and ``record``. Returns the epoch to
    start from.
    """
    if worker.count == 1:
        return start
    keys = ("epoch", "best", "best_epoch", "wait", "done")
    mine = np.asarray([start, *(float(record[k]) for k in keys[1:])], dtype=np.float64)
    values = _from_chief(strategy, worker, [mine, *model.get_weights()])
    agreed = values[0]
    if int(agreed[0]) != start:
        log.warn(
            f"{worker.name}: its checkpoint is at epoch {start}, the chief's at {int(agreed[0])}: following the chief"
        )
    record.update(
        epoch=int(agreed[0]),
        best=float(agreed[1]),
        best_epoch=int(agreed[2]),
        wait=int(agreed[3]),
        done=bool(agreed[4]),
    )
    model.set_weights(values[1:])
    return int(agreed[0])


def _from_chief(strategy: Any, worker: Worker, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The chief's ``arrays`` on every worker: one all-reduce (sum) of a flat vector to which only the chief adds."""
    import tensorflow as tf

    flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    if not worker.chief:
        flat = np.zeros_like(flat)
    summed = strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(flat, dtype=tf.float64)), axis=None
    )
    out, offset = [], 0
    total = np.asarray(summed)
    for a in arrays:
        a = np.asarray(a)
        out.append(total[offset : offset + a.size].reshape(a.shape).astype(a.dtype))
        offset += a.size
    return out
