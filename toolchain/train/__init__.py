"""``edgetl train``: ``stage.py`` (``train()``, ``TrainResult``), with its per-epoch checkpoints
(``checkpoint.py``) and the ``tf.distribute`` strategy and worker shards (``distribute.py``)."""
