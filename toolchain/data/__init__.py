"""Datasets in, seeded splits out: class folders, ``path,label`` CSVs and numpy arrays.

``items.py`` holds the types (``Item``, ``Dataset``); ``sources.py`` the three readers;
``splits.py`` finds a dataset and makes, writes and reads the run's seeded splits; ``paths.py``
keeps image paths relative to one recorded data root; ``pixels.py`` decodes each image once
into an on-disk cache that ``pipeline.py`` feeds to ``tf.data``; ``feed.py`` normalises and
augments batches; ``fashion_mnist.py`` writes the sample data. The names below are the package's
face (``from edgetl import data``; ``data.discover(...)``).
"""

from edgetl.data.items import SPLITS, Dataset, Item
from edgetl.data.splits import (
    check_readable,
    class_balance,
    describe,
    discover,
    load_split,
    split,
    split_image_loader,
    write_splits,
)

__all__ = [
    "SPLITS",
    "Dataset",
    "Item",
    "check_readable",
    "class_balance",
    "describe",
    "discover",
    "load_split",
    "split",
    "split_image_loader",
    "write_splits",
]
