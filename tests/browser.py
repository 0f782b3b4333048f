"""Headless Chromium for the browser tests (the preview page, the run report): where it is and how it starts.

The flags keep Chromium off the network it would otherwise call at start-up (this machine's
closed network refuses those connections, many at a time) and out of any user profile.
"""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
