"""The settings a user can give: their defaults, their allowed values, and their checks.

One home for what the API accepts, so the command line takes its defaults and choices from here
instead of declaring them again, and a bad value is refused once, up front, with one message (a
:class:`~clapknn.errors.ParameterError`) before any file is read. Pure Python: the CLI builds its
parser from this module without importing numpy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import ParameterError

__all__ = [
    "ENCODERS", "DEFAULT_ENCODER", "DEFAULT_SNIPPET_SECONDS", "DEFAULT_BATCH_SIZE", "DEFAULT_K",
    "WEIGHTS", "DEFAULT_WEIGHTS", "AGGREGATIONS", "DEFAULT_AGGREGATE", "SPACES", "DEFAULT_SPACE",
    "DEFAULT_SIMILAR_K", "EVAL_SHOTS", "EVAL_EPISODES", "EVAL_FOLDS", "EVAL_KS", "check_int", "check_seconds", "check_snippets",
    "DEFAULT_TAG_SNIPPETS", "DEFAULT_BUILD_SNIPPETS", "ALL_SNIPPETS", "check_max_snippets", "parse_max_snippets",
    "PRECISIONS", "DEFAULT_PRECISION", "check_choice", "check_threshold", "AUTO_WORKERS", "DEFAULT_CLI_WORKERS",
    "check_workers", "parse_workers",
    "check_output_path", "DEFAULT_SEED", "DEFAULT_WORKERS", "KEY_PROFILES", "DEFAULT_KEY_PROFILE", "DEFAULT_TAG_FIELD",
    "LIBRARY_KINDS", "DEFAULT_LIBRARY_KIND", "DEFAULT_TARGET_RECALL", "DEFAULT_FILES_PER_TASK", "DEFAULT_SIMILAR_TRACKS",
    "DEFAULT_HOST", "DEFAULT_PORT", "DEMO_PER_TAG", "DEFAULT_MULTILABEL_THRESHOLD",
]

#: Embedding models by name.
ENCODERS = ("features", "clap")
DEFAULT_ENCODER = "features"
#: Snippet length, seconds.
DEFAULT_SNIPPET_SECONDS = 10.0
#: Snippets per track used when tagging (the most; spread over the track, see
#: :func:`clapknn.audio.snippet.sample_indices`), and when building an index (``None``: every snippet, more
#: observations from few examples). Chosen by measurement: docs/scale.md, "Snippets per track".
DEFAULT_TAG_SNIPPETS = 6
DEFAULT_BUILD_SNIPPETS = None
#: How the command line says "every snippet".
ALL_SNIPPETS = "all"
#: Arithmetic of the CLAP encoder on CPU: ``fp32`` (default, the reference), ``int8`` (dynamic int8
#: quantisation of its linear layers), ``bf16`` (bfloat16 autocast). Part of the encoder identity
#: when not ``fp32``; measured in docs/scale.md ("Reduced precision").
PRECISIONS = ("fp32", "int8", "bf16")
DEFAULT_PRECISION = "fp32"
#: Snippets per forward pass.
DEFAULT_BATCH_SIZE = 16
#: Neighbours that vote per query snippet.
DEFAULT_K = 5
#: Vote weightings (:class:`~clapknn.vote.KNNTagger`).
WEIGHTS = ("uniform", "distance", "similarity")
DEFAULT_WEIGHTS = "similarity"
#: A multi-label index lists a tag when its track score reaches this (single-label: the top tag).
DEFAULT_MULTILABEL_THRESHOLD = 0.5
#: Snippet scores → track score (:func:`~clapknn.tagging.aggregate.aggregate`).
AGGREGATIONS = ("mean", "max", "vote")
DEFAULT_AGGREGATE = "mean"
#: The vote's search space (:func:`~clapknn.vote.space_options`).
SPACES = ("auto", "plain", "standardized")
DEFAULT_SPACE = "auto"
#: Tracks listed by ``similar``.
DEFAULT_SIMILAR_K = 10
#: ``evaluate``: labelled files per tag in the few-shot episodes, episodes per shot count, grouped
#: cross-validation folds, and the neighbour counts compared.
EVAL_SHOTS = (1, 2, 5, 10, 20)
EVAL_EPISODES = 20
EVAL_FOLDS = 5
EVAL_KS = (1, 3, 5, 10)
#: ``evaluate``: the seed of the episodes and folds.
DEFAULT_SEED = 0
#: Worker processes of the embedding engine in the API (0: one decoding thread beside the encoder).
DEFAULT_WORKERS = 0
#: ``workers="auto"``: one worker process per core for an encoder that encodes in them (``features``),
#: none (a decoding thread) for the others (``clap``); see :func:`clapknn.embedding.workers.resolve_workers`.
#: The command line's default (``--workers auto``); ``evaluate`` keeps :data:`DEFAULT_WORKERS`.
AUTO_WORKERS = "auto"
DEFAULT_CLI_WORKERS = AUTO_WORKERS
#: Key-profile sets of the key finding (:data:`clapknn.analysis.PROFILES`), and the default.
KEY_PROFILES = ("albrecht", "krumhansl", "temperley")
DEFAULT_KEY_PROFILE = "albrecht"
#: The tag field written into audio files (``clapknn tag --write``).
DEFAULT_TAG_FIELD = "mood"
#: Library index kinds (:mod:`clapknn.ann`: by size, exact scan, HNSW graph, inverted file), and the
#: recall@10 the approximate search depth is tuned to.
LIBRARY_KINDS = ("auto", "flat", "hnsw", "ivf")
DEFAULT_LIBRARY_KIND = "auto"
DEFAULT_TARGET_RECALL = 0.95
#: ``embed-ray``: files an encoder actor is given at a time.
DEFAULT_FILES_PER_TASK = 4
#: ``playlist --like``: tracks in a "more like these" playlist.
DEFAULT_SIMILAR_TRACKS = 50
#: ``serve``: where the web app listens (this machine only by default).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: ``demo``: bundled examples per mood the demo index is built from.
DEMO_PER_TAG = 2


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__name__.startswith(("int", "uint"))


def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as an int of at least ``minimum``, else a ParameterError naming ``name``."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or int(value) < minimum:
        raise ParameterError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def check_seconds(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` as a positive, finite number of seconds."""
    if value is None and allow_none:
        return None
    try:
        ok = not isinstance(value, bool) and float(value) > 0 and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_snippets(snippet_seconds: Any, hop_seconds: Any = None) -> tuple[float, float]:
    """The snippet length and hop, seconds (the hop defaults to the length); both must be positive."""
    length = check_seconds("snippet length", snippet_seconds)
    hop = check_seconds("hop", hop_seconds, allow_none=True)
    return length, length if hop is None else hop


def check_max_snippets(value: Any) -> int | None:
    """Snippets per track: ``None`` or ``"all"`` for every snippet, else an integer of at least 1."""
    if value is None or value == ALL_SNIPPETS:
        return None
    if not _is_int(value) or int(value) < 1:
        raise ParameterError(f"snippets per track must be an integer of at least 1 or {ALL_SNIPPETS!r}, got {value!r}")
    return int(value)


def parse_max_snippets(text: str) -> int | None:
    """The command line's ``--snippets N|all`` as :func:`check_max_snippets` takes it."""
    value = _int_or_text(text)
    return None if value == ALL_SNIPPETS else check_max_snippets(value)


def _int_or_text(text: str) -> Any:
    """A command-line value as an int when it reads as one, else stripped and lower-cased."""
    text = str(text).strip().lower()
    try:
        return int(text)
    except ValueError:
        return text


def check_workers(value: Any) -> int | str:
    """Worker processes: :data:`AUTO_WORKERS`, or an integer of at least 0 (0: a decoding thread)."""
    if value == AUTO_WORKERS:
        return AUTO_WORKERS
    if not _is_int(value) or int(value) < 0:
        raise ParameterError(f"workers must be {AUTO_WORKERS!r} or an integer of at least 0, got {value!r}")
    return int(value)


def parse_workers(text: str) -> int | str:
    """The command line's ``--workers auto|N`` as :func:`check_workers` takes it."""
    return check_workers(_int_or_text(text))


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ParameterError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def check_threshold(value: Any) -> float | None:
    """A score threshold: ``None`` (the default rule) or a number in [0, 1] (scores lie there)."""
    if value is None:
        return None
    try:
        ok = not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"threshold must lie between 0 and 1 (tag scores do), got {value!r}")
    return float(value)


def check_output_path(path: str | os.PathLike) -> Path:
    """A file to be written: its folder must exist (nothing is created outside what the user made),
    and it must not be a folder itself."""
    p = Path(os.path.expanduser(str(path)))
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ParameterError(f"{path}: folder {parent} does not exist; create it first")
    if p.is_dir():
        raise ParameterError(f"{path}: is a folder; give a file name")
    return p
