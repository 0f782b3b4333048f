"""``tf.data`` pipelines over the on-disk caches, so the model never waits on one Python thread.

Training batches are read from a cached split (``edgetl.data.pixels.Rows``),
augmented (``feed.augment``: flip, rotation, contrast on uint8 pixels, as a camera
delivers them) and normalised (``edgetl.runtime.preprocess.normalize``, the device's
function) in ``tf.data``'s parallel map, and prefetched. Which rows and which
augmentation an epoch gets depend only on (seed, epoch, batch index) -- the same
seeding the in-memory ``feed.make_sequence`` used -- so a resumed run sees the
same batches as an uninterrupted one.

The cached-feature head phase computes the frozen backbone's features once per
view through one ``tf.function`` in large batches (256 images at 96 px, fewer at
larger sizes: ``inference_batch``), and writes them to a float16 ``.npy`` in the
run's partial folder; the head then trains on batches streamed from it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgetl import log
from edgetl.data import feed, pixels
from edgetl.model.graph import keras
from edgetl.runtime.model_card import Normalization
from edgetl.runtime.preprocess import normalize

FEATURE_BATCH = 256  # images per inference call at 96 px
# Inference activations grow with the pixels per call: at 160 px a batch of 256 held
# ~1 GB more than at 96 px (peak RSS 2.33 GB at 0.35/160), so larger images get
# proportionally smaller batches: the same pixels per call, the same memory.
FEATURE_PIXELS = FEATURE_BATCH * 96 * 96


def inference_batch(shape: tuple[int, ...]) -> int:
    """Images per inference call for inputs of ``shape``: 256 at 96 px, 64 at 160, 32 at 224 (a multiple of 32)."""
    pixels = int(shape[0]) * int(shape[1]) if len(shape) >= 2 else 1
    return max(32, min(FEATURE_BATCH, FEATURE_PIXELS // pixels // 32 * 32))


@dataclasses.dataclass(frozen=True)
class Source:
    """Rows of a cached array that one worker reads, with their labels.

    Attributes:
        rows: the cached array (pixels or features).
        labels: one label per row of ``rows``.
        indices: the rows this worker owns (all of them on one machine).
    """

    rows: pixels.Rows
    labels: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def _tf() -> Any:

    keras()
    import tensorflow as tf

    return tf


def steps(count: int, batch_size: int) -> int:
    return max(1, -(-count // batch_size))


def training_batches(
    src: Source,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
    prepare: Callable[[np.ndarray, int, int], np.ndarray],
    shape: tuple[int, ...],
) -> Any:
    """Batches for epochs ``first_epoch+1 .. epochs`` as one dataset (``fit(steps_per_epoch=steps(...))``).

    Epoch ``e`` visits ``src.indices`` in the order of ``default_rng((seed, e))``;
    each batch's rows are sorted (one read per run of consecutive rows) and passed
    with (epoch, batch index) to ``prepare``, which returns model inputs.
    """
    tf = _tf()
    n, indices, labels = len(src), src.indices, src.labels

    def order(epoch: np.int64) -> np.ndarray:
        return np.random.default_rng((seed, int(epoch))).permutation(n).astype(np.int64)

    def load(chosen: np.ndarray, epoch: np.int64, batch: np.int64) -> tuple[np.ndarray, np.ndarray]:
        rows = indices[np.sort(chosen)]
        return prepare(src.rows.take(rows), int(epoch), int(batch)), labels[rows]

    def per_epoch(epoch: Any) -> Any:
        perm = tf.numpy_function(order, [epoch], tf.int64, stateful=False)
        batches = tf.data.Dataset.from_tensor_slices(perm).batch(batch_size).enumerate()
        return batches.map(lambda b, chosen: (chosen, epoch, b))

    ds = tf.data.Dataset.range(first_epoch + 1, epochs + 1).flat_map(per_epoch)
    return _finish(tf, ds.map(lambda c, e, b: _call(tf, load, c, e, b), num_parallel_calls=tf.data.AUTOTUNE), shape)


def ordered_batches(
    src: Source, batch_size: int, prepare: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]
) -> Any:
    """One pass over ``src`` in order (validation, evaluation), prepared in parallel and prefetched."""
    tf = _tf()

    def load(start: np.int64) -> tuple[np.ndarray, np.ndarray]:
        rows = src.indices[int(start) : int(start) + batch_size]
        return prepare(src.rows.take(rows)), src.labels[rows]

    ds = tf.data.Dataset.range(0, len(src), batch_size)
    return _finish(tf, ds.map(lambda s: _call(tf, load, s), num_parallel_calls=tf.data.AUTOTUNE), shape)


def _call(tf: Any, fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    x, y = tf.numpy_function(fn, list(args), (tf.float32, tf.int32), stateful=False)
    return x, y


def _finish(tf: Any, ds: Any, shape: tuple[int, ...]) -> Any:
    """Restore the static shapes ``numpy_function`` loses (Keras needs them), shard by index only, prefetch."""

    def shaped(x: Any, y: Any) -> tuple[Any, Any]:
        x.set_shape((None,) + tuple(shape))
        y.set_shape([None])
        return x, y

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # Source.indices shard
    options.deterministic = True
    return ds.map(shaped).with_options(options).prefetch(tf.data.AUTOTUNE)


def pixel_preparer(normalization: Normalization, seed: int, augmented: bool) -> Callable[..., np.ndarray]:
    """uint8 rows -> (seeded augmentation) -> normalised float32, as ``feed.make_sequence`` did."""

    def prepare(pixels: np.ndarray, epoch: int = 0, batch: int = 0) -> np.ndarray:
        if augmented:
            pixels = feed.augment(pixels, np.random.default_rng((seed, epoch, batch)))
        return normalize(pixels, normalization)

    return prepare


def as_float32(rows: np.ndarray, *_: int) -> np.ndarray:
    return rows.astype(np.float32)


def batch_function(model: Any, shape: tuple[int, ...]) -> Callable[[Any], Any]:
    """``model`` in inference mode as one traced function for any batch size."""
    tf = _tf()
    return tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None,) + tuple(shape), tf.float32)]
    )


def predict(model: Any, src: Source, normalization: Normalization, shape: tuple[int, ...]) -> np.ndarray:
    """``model``'s outputs for every row of ``src`` (streamed at batch 256; only the outputs are kept)."""
    fn = batch_function(model, shape)
    ds = ordered_batches(src, inference_batch(shape), pixel_preparer(normalization, 0, False), shape)
    outs = [np.asarray(fn(x), dtype=np.float32) for x, _ in ds]
    return np.concatenate(outs) if outs else np.zeros((0,) + tuple(int(d) for d in model.output_shape[1:]), np.float32)


def write_features(
    model: Any, src: Source, views: int, normalization: Normalization, seed: int, shape: tuple[int, ...], path: Path
) -> pixels.Rows:
    """Backbone features of ``views`` views of ``src`` (view 0 as is, then seeded augmentations) as float16 ``path``.

    View ``v``'s augmentation draws from ``default_rng((seed, 1000 + v))`` image by
    image in order, the stream the in-memory ``feed.augmented_views`` used. Reused
    when ``path`` exists (a resumed run); written through a temporary name.
    """
    if path.exists():
        return pixels.Rows(path)
    tf = _tf()
    fn, batch = batch_function(model, shape), inference_batch(shape)
    with pixels.writing(path, "float16", (views * len(src), int(model.output_shape[-1]))) as write:
        for view in range(views):
            rng: Optional[np.random.Generator] = np.random.default_rng((seed, 1000 + view)) if view else None

            def batches(rng: Optional[np.random.Generator] = rng) -> Any:
                for start in range(0, len(src), batch):
                    pixels = src.rows.take(src.indices[start : start + batch])
                    yield normalize(feed.augment(pixels, rng) if rng is not None else pixels, normalization)

            ds = tf.data.Dataset.from_generator(
                batches, output_signature=tf.TensorSpec((None,) + tuple(shape), tf.float32)
            )
            for k, x in enumerate(
                log.progress(ds.prefetch(2), steps(len(src), batch), f"features of view {view + 1}/{views}")
            ):
                write(view * len(src) + k * batch, np.asarray(fn(x)).astype(np.float16))
    return pixels.Rows(path)
