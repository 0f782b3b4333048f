"""``python -m toolchain`` is ``edgetl``."""

from toolchain.cli import main

main()
