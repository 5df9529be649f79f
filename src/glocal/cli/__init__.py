"""The ``glocal`` command line (``glocal --help``, or ``python -m glocal --help``); see :mod:`glocal.cli.app`.

Importing this package imports click, not torch: each command imports the engine when it runs.
"""

from .app import cli, main

__all__ = ["cli", "main"]
