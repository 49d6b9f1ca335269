"""``python -m clapknn``: the command line (see :mod:`clapknn.cli`)."""

import sys

from .cli import main

sys.exit(main())
