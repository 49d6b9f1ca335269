"""What the commands share: exit codes, the skipped-inputs listing, and the command-line values
turned into the API's arguments (encoder options, snippets, the cache, lists)."""

from __future__ import annotations

import sys
from typing import Sequence

from .. import options as opt

EXIT_OK, EXIT_SKIPPED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def print_skipped(skipped, quiet: bool, limit: int = 20) -> None:
    """List skipped inputs on stderr (only the first ``limit`` when ``quiet``)."""
    if not skipped:
        return
    skipped = list(skipped)
    print(f"skipped {len(skipped)} input(s):", file=sys.stderr)
    shown = skipped[:limit] if quiet else skipped
    for where, reason in shown:
        print(f"  {where}: {reason}", file=sys.stderr)
    if len(shown) < len(skipped):
        print(f"  ... and {len(skipped) - len(shown)} more", file=sys.stderr)


def encoder_options(args) -> dict:
    opts = {}
    for name in ("checkpoint", "device", "threads", "tokenizer_path", "precision"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    if getattr(args, "allow_download", False):
        opts["allow_download"] = True
    if getattr(args, "quiet", False):
        opts["progress"] = False  # no model-loading notice either
    return opts


def parse_prompts(items: Sequence[str] | None) -> dict[str, list[str]]:
    from ..errors import ParameterError

    prompts: dict[str, list[str]] = {}
    for item in items or []:
        tag, sep, text = item.partition("=")
        if not sep or not tag.strip() or not text.strip():
            raise ParameterError(f"--prompt must look like TAG=TEXT, got {item!r}")
        prompts.setdefault(tag.strip(), []).append(text.strip())
    return prompts


def max_snippets(args, default):
    """``--snippets N|all`` for the API (``None``: every snippet), else ``default``."""
    return default if args.snippets is None else opt.parse_max_snippets(args.snippets)


def snippet_seconds(args) -> float:
    return opt.DEFAULT_SNIPPET_SECONDS if args.snippet_seconds is None else args.snippet_seconds


def refuse_with_shards(args, *flags: tuple[str, str]) -> None:
    """``--from-shards`` takes the encoder and snippets from the shards: refuse settings it would ignore."""
    from ..errors import ParameterError

    given = [flag for flag, name in flags if getattr(args, name, None) not in (None, [], False)]
    if given:
        raise ParameterError(
            f"--from-shards takes the encoder and the snippets from the shards; {', '.join(given)} cannot apply (leave "
            + ("it" if len(given) == 1 else "them") + " out)"
        )


def check_out(args) -> None:
    """Refuse a table ``--out`` that cannot be written before any work is done."""
    if getattr(args, "out", None):
        from ..output import check_table_path

        check_table_path(args.out)


def cache_option(args):
    """``cache=`` for the API: off with --no-cache, a folder with --cache, else the default one."""
    if getattr(args, "no_cache", False):
        return False
    return getattr(args, "cache", None) or True


def csv_list(text: str, kind, what: str) -> list:
    from ..errors import ParameterError

    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"{what} must be a comma-separated list, got {text!r}") from None
