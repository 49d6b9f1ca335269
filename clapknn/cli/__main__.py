"""``python -m clapknn.cli``: the command line (as ``python -m clapknn``)."""

import sys

from .main import main

sys.exit(main())
