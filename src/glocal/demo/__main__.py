"""``python -m glocal.demo``."""

import sys

from .mobilenet import main

sys.exit(main())
