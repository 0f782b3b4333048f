"""Per-epoch checkpoints: early stopping that survives Ctrl-C, SIGKILL and ``--resume``.

Keras' ``EarlyStopping`` keeps its best weights in memory, so a killed run loses
everything. This callback does the same job (stop after ``patience`` epochs
without a better val loss, restore the best weights) but writes, after every
epoch, the last and best weights and a JSON state, each atomically: a run killed
at any moment loses at most the epoch in flight, and ``edgetl train --resume``
continues from the last completed one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

from edgetl.model.graph import keras
from edgetl.runtime.model_card import atomic_path, read_json, write_json_atomic


class State:
    """The JSON record of every phase's progress, in ``checkpoint/state.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "state.json"
        self.phases: dict[str, dict[str, Any]] = (read_json(self.path) or {}) if self.path.exists() else {}

    def phase(self, name: str) -> dict[str, Any]:
        return self.phases.setdefault(
            name, {"epoch": 0, "best": math.inf, "best_epoch": -1, "wait": 0, "done": False, "history": {}}
        )

    def weights(self, name: str, which: str) -> Path:
        return self.folder / f"{name}_{which}.h5"

    def save(self) -> None:
        write_json_atomic(self.path, self.phases)


def save_weights_atomic(model: Any, path: Path) -> None:
    """Write a model's weights to ``path`` through a temporary file and a rename."""
    with atomic_path(path, suffix=".h5") as tmp:
        model.save_weights(str(tmp))


def make_callback(state: State, phase: str, patience: int) -> Any:
    """A Keras callback that checkpoints ``phase`` each epoch and early-stops on val loss."""

    class _Checkpoint(keras().callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
            record = state.phase(phase)
            for key, value in (logs or {}).items():
                record["history"].setdefault(key, []).append(float(value))
            # When each epoch ended (Unix seconds): learning curves against time, time-to-accuracy.
            record["history"].setdefault("epoch_end_unix", []).append(round(time.time(), 3))
            val = float((logs or {}).get("val_loss", math.inf))
            if val < record["best"]:
                record.update(best=val, best_epoch=epoch, wait=0)
                save_weights_atomic(self.model, state.weights(phase, "best"))
            else:
                record["wait"] += 1
            save_weights_atomic(self.model, state.weights(phase, "last"))
            record["epoch"] = epoch + 1
            state.save()
            if record["wait"] >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs: Optional[dict[str, float]] = None) -> None:
            restore_best(self.model, state, phase)
            state.phase(phase)["done"] = True
            state.save()

    return _Checkpoint()


def restore_best(model: Any, state: State, phase: str) -> None:
    """Load the phase's best weights into ``model`` (no-op before the first epoch ends)."""
    best = state.weights(phase, "best")
    if best.exists():
        model.load_weights(str(best))


def resume_point(model: Any, state: State, phase: str) -> int:
    """Load the last completed epoch's weights into ``model``; return the epoch to start from."""
    record = state.phase(phase)
    last = state.weights(phase, "last")
    if record["epoch"] and last.exists():
        model.load_weights(str(last))
        return int(record["epoch"])
    return 0
