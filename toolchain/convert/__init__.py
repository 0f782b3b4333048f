"""``edgetl convert`` and ``edgetl calibrate``.

``calibrate.py`` chooses and records the int8 representative set; ``stage.py`` writes each TFLite
variant with its card; ``rounding.py`` (GPTQ + bias correction) and ``debugger.py`` (per-layer
int8 error) serve int8; ``budget.py`` is ``--max-drop``; ``tflite_inspect.py`` reads converted
files back.
"""
