"""The ``edgetl`` command line (``main.py``: the group; one module per family of commands).

``common.py`` holds what every command shares (error lines and exit codes, ``-q``/``-v``,
result printing); ``train.py`` the commands that make a run and its inputs; ``stages.py``
the commands that work on a run folder; ``parity.py`` the gate; ``cache.py`` the cache.
"""
