"""edgetl's version, in one place: ``edgetl.__version__``, ``edgetl.runtime.__version__`` and the
version written into every ``.tflite``'s metadata (keep it equal to pyproject.toml's)."""

__version__ = "0.1.0"
