"""How a converted model is judged, on any held-out images: the checks of one variant from per-image
outputs (``checks.py``), the reference's own noise floor (``noise_floor.py``) and each check's
sentence (``texts.py``). ``edgetl parity`` judges the test split with it, and ``convert --max-drop``
the val split, so both apply the same rules."""
