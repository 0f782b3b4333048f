"""``edgetl parity``: every ``.tflite`` against the model it came from, through the device code.

``stage.py`` runs the gate; ``noise_floor.py`` measures the reference's own flips under
imperceptible changes; ``checks.py`` turns per-image outputs into checks (statistics in
:mod:`edgetl.stats`); ``summary.py`` says the answer in sentences; ``report.py`` writes
parity.json/.md, JUnit and the flipped images. Thresholds: :mod:`edgetl.config.parity`.
"""
