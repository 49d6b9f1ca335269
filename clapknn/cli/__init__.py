"""Command line: thin commands over the public API.

Exit codes: 0 success; 1 finished, but some inputs were skipped (each is listed with its reason);
2 error (bad arguments or input; one line ``clapknn: error: ...``, no traceback); 130 interrupted.

- :mod:`~clapknn.cli.parser`: the parser, its defaults and choices taken from the API's settings;
- :mod:`~clapknn.cli.tagging`: ``build``, ``tag``, ``analyze``, ``info``, ``evaluate``, ``add``, ``remove``;
- :mod:`~clapknn.cli.library`: ``index-library``, ``similar``, ``embed-ray``, ``cache``, ``demo``,
  ``playlist``, ``serve``;
- :mod:`~clapknn.cli.common`: exit codes and the arguments turned into the API's;
- :mod:`~clapknn.cli.main`: :func:`main`, the entry point (``clapknn``, ``python -m clapknn``).
"""

from __future__ import annotations

from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED
from .main import main
from .parser import build_parser

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SKIPPED", "build_parser", "main"]
