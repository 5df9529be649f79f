"""The ``glocal`` command line (``glocal --help``, or ``python -m glocal --help``).

:mod:`glocal.cli.surface` holds the click group and what every command shares; :mod:`glocal.cli.app`,
:mod:`glocal.cli.analysis` and :mod:`glocal.cli.parts` add the subcommands to it when imported here. Importing this
package imports click, not torch: each command imports the engine when it runs.
"""

from . import analysis, app, parts
from .surface import cli, main

__all__ = ["analysis", "app", "cli", "main", "parts"]
