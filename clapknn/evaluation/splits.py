"""The evaluation's splits of a labelled set, by group (source track or album): few-shot episodes
and grouped, stratified cross-validation folds. A group is never on both sides of a split."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ParameterError
from ..labels import tag_indicator

__all__ = ["few_shot_episodes", "fold_count", "grouped_folds"]


def few_shot_episodes(
    tags: Sequence[Sequence[str]],
    groups: Sequence[Any],
    *,
    shots: int,
    n_episodes: int,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Few-shot episodes: ``(support, queries)`` arrays of file indices.

    Each tag gets ``shots`` support files, each from a different group (a file with several tags
    counts for each; tags are filled in a random order). Queries are all files whose group has no
    support file; files of a support group that were not drawn are left out. Episode ``e`` depends
    only on ``(seed, shots, e)``.

    Raises
    ------
    ParameterError
        When some tag has fewer than ``shots + 1`` groups, so it could not appear on both sides.
    """
    groups = np.asarray(groups, dtype=object)
    classes = sorted({t for ts in tags for t in ts})
    Y = tag_indicator(tags, classes)
    _, gid = np.unique(groups.astype(str), return_inverse=True)
    short = [f"{t} ({len(set(gid[Y[:, j] == 1]))})" for j, t in enumerate(classes) if len(set(gid[Y[:, j] == 1])) < shots + 1]
    if short:
        raise ParameterError(
            f"{shots} shot(s) per tag need at least {shots + 1} groups per tag; too few for: {', '.join(short)}"
        )
    out = []
    for e in range(n_episodes):
        rng = np.random.default_rng([int(seed), int(shots), e])
        for _attempt in range(100):
            support: list[int] = []
            used: set[int] = set()
            counts = np.zeros(len(classes), dtype=np.int64)
            for j in rng.permutation(len(classes)):
                for i in rng.permutation(np.flatnonzero(Y[:, j])):
                    if counts[j] >= shots:
                        break
                    if gid[i] in used:
                        continue
                    support.append(int(i))
                    used.add(int(gid[i]))
                    counts += Y[i]
            queries = np.flatnonzero(~np.isin(gid, list(used)))
            if (counts >= shots).all() and Y[queries].sum(axis=0).min() > 0:
                break
        else:  # pragma: no cover - needs pathological group/tag overlap
            raise ParameterError(f"could not draw a {shots}-shot episode with every tag among the queries")
        out.append((np.array(sorted(support), dtype=np.int64), queries.astype(np.int64)))
    return out


def _strata(tags: Sequence[Sequence[str]]) -> list[str]:
    """Each file's rarest tag (its only tag when single-label): what the folds stratify on."""
    freq: dict[str, int] = {}
    for ts in tags:
        for t in ts:
            freq[t] = freq.get(t, 0) + 1
    return [min(ts, key=lambda t: (freq[t], t)) for ts in tags]


def fold_count(tags: Sequence[Sequence[str]], groups: Sequence[Any], n_folds: int) -> tuple[int, str]:
    """The number of folds :func:`grouped_folds` makes for ``n_folds`` asked, and why it is fewer.

    A fold count can be no larger than the number of groups of any stratum (the rarest tag of each
    file), so that every stratum can be in every test fold.

    Returns
    -------
    (n, reason)
        ``n`` folds (below 2: no cross-validation is possible) and, when ``n < n_folds``, the
        reason (the stratum with the fewest groups), else ``""``.
    """
    groups = np.asarray(groups, dtype=object).astype(str)
    per: dict[str, set] = {}
    for s, g in zip(_strata(tags), groups):
        per.setdefault(s, set()).add(g)
    if not per:
        return 0, "no files"
    fewest = min(per, key=lambda s: (len(per[s]), s))
    n = min(int(n_folds), len(per[fewest]))
    reason = "" if n >= n_folds else f"tag {fewest!r} has {len(per[fewest])} group(s)"
    return n, reason


def grouped_folds(
    tags: Sequence[Sequence[str]], groups: Sequence[Any], *, n_folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold over groups: ``(train, test)`` arrays of file indices.

    Stratified on each file's rarest tag (its only tag when single-label), with scikit-learn's
    ``StratifiedGroupKFold``; ``n_folds`` is capped at the number of groups of the smallest
    stratum (:func:`fold_count`), so a small set gets fewer folds rather than an error.

    Raises
    ------
    ParameterError
        When some stratum has fewer than 2 groups (it could not be on both sides of a split).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n, reason = fold_count(tags, groups, n_folds)
    if n < 2:
        raise ParameterError(f"cross-validation needs at least 2 folds and 2 groups per tag; {reason or f'{n_folds} fold(s) asked'}")
    groups = np.asarray(groups, dtype=object).astype(str)
    cv = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        folds = [(np.asarray(tr, np.int64), np.asarray(te, np.int64))
                 for tr, te in cv.split(np.zeros(len(tags)), _strata(tags), groups)]
    return [(tr, te) for tr, te in folds if len(tr) and len(te)]
