"""Evaluation: how good will tagging be on a labelled set, and with which settings?

One module per job:

- :mod:`~clapknn.evaluation.embeddings`: every labelled file embedded once per snippet length
  (through the one embedding engine), :class:`Embedded`;
- :mod:`~clapknn.evaluation.splits`: few-shot episodes and grouped folds;
- :mod:`~clapknn.evaluation.metrics`: track-level metrics (``sklearn.metrics``) and chance levels;
- :mod:`~clapknn.evaluation.baselines`: majority class, nearest centroid, logistic regression;
- :mod:`~clapknn.evaluation.run`: :func:`evaluate`, the protocol;
- :mod:`~clapknn.evaluation.report`: :class:`EvaluationReport`, its text and files;
- :mod:`~clapknn.evaluation.plots`: its PNG plots.

>>> from clapknn.evaluation import evaluate
>>> report = evaluate("examples/", shots=(1, 5), out_dir="eval")   # doctest: +SKIP
>>> print(report.text())                                            # doctest: +SKIP
"""

from __future__ import annotations

from .baselines import METHODS
from .embeddings import Embedded, embed_examples
from .metrics import METRICS, chance_levels, track_metrics
from .report import EvaluationReport
from .run import SHOTS, evaluate
from .splits import few_shot_episodes, fold_count, grouped_folds

__all__ = [
    "SHOTS",
    "METHODS",
    "METRICS",
    "Embedded",
    "EvaluationReport",
    "embed_examples",
    "evaluate",
    "few_shot_episodes",
    "grouped_folds",
    "fold_count",
    "track_metrics",
    "chance_levels",
]
