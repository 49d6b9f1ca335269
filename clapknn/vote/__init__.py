"""Vote: a scikit-learn k-nearest-neighbour classifier over embeddings (cosine similarity).

One module per job:

- :mod:`~clapknn.vote.estimator`: :class:`KNNTagger` (fit, search, predict, its saved state);
- :mod:`~clapknn.vote.space`: the search space (``space_options``, the standardisation, the
  transform) and the ``standardize="auto"`` choice between the plain and the standardised space;
- :mod:`~clapknn.vote.relevance`: block and dimension relevance (F ratios of file means);
- :mod:`~clapknn.vote.scores`: per-neighbour weights and per-tag scores;
- :mod:`~clapknn.vote.inputs`: ``X`` and ``y`` as the estimator reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..options import SPACES, WEIGHTS  # the vote weightings and search spaces (see space_options)
from .scores import vote_scores, vote_weights
from .space import space_options

if TYPE_CHECKING:  # pragma: no cover
    from .estimator import EXPECTED_FAILED_CHECKS, KNNTagger

__all__ = ["EXPECTED_FAILED_CHECKS", "KNNTagger", "SPACES", "WEIGHTS", "space_options", "vote_scores", "vote_weights"]


def __getattr__(name: str) -> Any:
    # the estimator (and with it scikit-learn, seconds of imports) loads on first use, so a process
    # that only needs the search space or the scores does not pay for it
    if name in ("EXPECTED_FAILED_CHECKS", "KNNTagger"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
