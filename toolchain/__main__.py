"""``python -m edgetl`` is ``edgetl``."""

from edgetl.cli.main import main

main()
