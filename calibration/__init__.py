"""The representative set for int8 calibration: chosen, recorded, fed.

``select`` picks a class-balanced, seeded, bounded set from the train split;
``manifest`` writes it to ``RUN/calibration.json`` with a checksum; ``representative``
feeds it to the converter through the device's preprocessing. This package never
imports the toolchain: it is given item lists and, for image arrays, a pixel loader.
"""

from edgetl.calibration.manifest import MANIFEST_NAME, Manifest, build_manifest, list_sha256, load_manifest
from edgetl.calibration.representative import PixelLoader, representative_dataset
from edgetl.calibration.select import CalibrationError, select_balanced

__all__ = [
    "MANIFEST_NAME",
    "CalibrationError",
    "Manifest",
    "PixelLoader",
    "build_manifest",
    "list_sha256",
    "load_manifest",
    "representative_dataset",
    "select_balanced",
]
