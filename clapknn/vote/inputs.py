"""What :class:`~clapknn.vote.KNNTagger` is given: ``X`` as validated float32 rows, and ``y`` read
as tag collections (one per sample) or, as scikit-learn reads it, an array."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import validate_data

from ..errors import ParameterError

__all__ = ["tag_collections", "validated"]


def tag_collections(y) -> list | None:
    """``y`` as a list of tag collections when it is one, else ``None`` (an array-like y).

    A list or tuple whose items are all lists, tuples, sets or arrays is read as one tag
    collection per sample, unless it is a rectangular table of numbers: that one is read as
    scikit-learn reads it, an array (``[[0, 1], [1, 1]]`` is a 0/1 indicator matrix, ``[[3], [5]]``
    a column vector of labels).
    """
    if not isinstance(y, (list, tuple)) or len(y) == 0:
        return None
    if not all(isinstance(v, (list, tuple, set, frozenset, np.ndarray)) for v in y):
        return None
    if not any(isinstance(v, (set, frozenset)) for v in y) and len({len(v) for v in y}) == 1 and len(y[0]) > 0:
        try:
            table = np.asarray(y)
        except ValueError:
            table = None
        if table is not None and table.ndim == 2 and table.dtype.kind in "biuf":
            return None
    return [list(v) for v in y]


def validated(estimator, X, y="no_validation", **check_params):
    """``sklearn.utils.validation.validate_data`` with float32 rows; its ``ValueError`` becomes a
    :class:`~clapknn.errors.ParameterError` (still a ``ValueError``) with the same message."""
    try:
        return validate_data(estimator, X, y, dtype=np.float32, **check_params)
    except ParameterError:
        raise
    except ValueError as exc:
        raise ParameterError(str(exc)) from exc
