"""``edgetl qat``: ``stage.py`` (``qat()``, ``QatResult``). The fake-quantization scheme lives in
:mod:`edgetl.model.qat_scheme`, since convert and parity load QAT models too."""
