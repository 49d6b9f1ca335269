"""The command line's entry point: parse, set up logging, run the command, turn errors into exit codes."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK
from .parser import build_parser


class _StderrHandler(logging.StreamHandler):
    """A log handler that writes to ``sys.stderr`` as it is at each line (redirected or captured)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging(verbose: bool) -> None:
    """``-v``: clapknn's own INFO lines on stderr; other libraries' loggers (faiss, ...) are left alone."""
    log = logging.getLogger("clapknn")
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("clapknn: %(message)s"))
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    from ..errors import ClapknnError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    _configure_logging(args.verbose)
    try:
        return args.func(args)
    except ClapknnError as exc:
        print(f"clapknn: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("clapknn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BrokenPipeError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            return EXIT_OK
        print(f"clapknn: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
