"""``python -m edgetl`` is ``edgetl``."""

from edgetl.cli import main

main()
