"""Started by every Python subprocess of the test suite (conftest puts this folder on PYTHONPATH): no network."""

import edgetl_netguard

edgetl_netguard.install()
