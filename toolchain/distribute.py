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
import json
import os
from typing import Any

import numpy as np
from edgetl import log
from edgetl.config import Strategy, TrainConfig
from edgetl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the cluster: ``index`` of ``count`` input shards; ``chief`` writes the run."""

    index: int = 0
    count: int = 1
    chief: bool = True

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
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            "--strategy multi-worker needs TF_CONFIG, e.g. "
            '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\' '
            "on each host (index 0 on the first, 1 on the second)"
        ) from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return Worker(index=position, count=len(members), chief=chief)


def make_strategy(config: TrainConfig, gpus: int) -> Any:
    """The strategy for ``config.strategy`` on a machine with ``gpus`` GPUs (``auto``: mirrored when > 1)."""
    import tensorflow as tf  # noqa: PLC0415

    if config.strategy == Strategy.MULTI_WORKER:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info(f"multi-worker: {strategy.num_replicas_in_sync} replica(s) in sync across the TF_CONFIG cluster")
        return strategy
    if config.strategy == Strategy.MIRRORED or (config.strategy == Strategy.AUTO and gpus > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
    import tensorflow as tf  # noqa: PLC0415

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
    import tensorflow as tf  # noqa: PLC0415

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
