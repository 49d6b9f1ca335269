"""Block and dimension relevance: how well each feature block, and each dimension within it,
separates the examples' tags (the ``block_relevance`` of :class:`~clapknn.vote.KNNTagger`).

A dimension's F ratio is the mean over the tags of the between-file / within-file variance ratio
of file means (the one-way ANOVA F statistic, each tag against the rest), its within-tag variance
moderated: shrunk towards its block's mean variance by a prior worth :data:`_VARIANCE_PRIOR_DOF`
files (as limma moderates its t statistics), so that with two or three files per tag a dimension
whose few files happen to agree cannot take the vote. No training: two means and two variances per
dimension.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_means", "relevance_of"]

_RELEVANCE_POWER = 0.75  # a block's weight grows as its mean F ratio to this power
_DIM_POWER = 0.5  # a dimension's weight within its block grows as its F ratio to this power
# each dimension's F ratio is shrunk towards its block's mean by the share
# _DIM_SHRINK / (_DIM_SHRINK + files - 2): with few files a single dimension's ratio is mostly noise
_DIM_SHRINK = 10.0
# a dimension's within-tag variance is shrunk towards the mean over its block's dimensions by the
# share _VARIANCE_PRIOR_DOF / (_VARIANCE_PRIOR_DOF + files - 2)
_VARIANCE_PRIOR_DOF = 4.0


def group_means(Z: np.ndarray, Y: np.ndarray, inv: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group (file): the mean of its rows of ``Z``, and which tags (of ``Y``) it has."""
    counts = np.bincount(inv, minlength=n_groups).astype(np.float64)
    means = np.zeros((n_groups, Z.shape[1]))
    np.add.at(means, inv, Z)
    tags = np.zeros((n_groups, Y.shape[1]))
    np.add.at(tags, inv, Y)
    return means / counts[:, None], tags / counts[:, None] > 0.5


def relevance_of(means: np.ndarray, has: np.ndarray, blocks, *, leave_one_out: bool = False, dims: bool = False):
    """Per-block relevance from file means ``(files, dims)`` and tags ``(files, tags)``, for the
    column ``blocks`` ``(start, stop, weight)`` (see ``block_relevance``): the mean over the tags
    of the one-way F ratio of each dimension, tag against the rest, its within-tag variance shrunk
    towards its block's mean by the share ``_VARIANCE_PRIOR_DOF / (_VARIANCE_PRIOR_DOF + files - 2)``;
    a block's relevance is the mean of its dimensions' ratios to the power :data:`_RELEVANCE_POWER`.
    A tag without two files on either side cannot be measured and is left out of the mean; with no
    tag left, every block (and dimension) gets 1.

    With ``dims``: also each dimension's relevance within its block, ``(block relevance,
    dimension relevance)``: its ratio shrunk towards the block's mean by the share
    ``_DIM_SHRINK / (_DIM_SHRINK + files - 2)``, to the power :data:`_DIM_POWER`.

    With ``leave_one_out``: one row per file, the relevance measured without that file
    (``(files, blocks)``, ``(files, dims)``; each file's sums taken out of its side, in closed form).
    """
    sq = means**2
    rows = len(means) if leave_one_out else 1
    ratios = np.zeros((rows, means.shape[1]))
    measured = np.zeros(rows)
    for t in range(has.shape[1]):
        sides = []
        for side in (has[:, t], ~has[:, t]):
            # row i leaves file i out: its mean comes off the sums of its own side
            out = side.astype(np.float64)[:, None] if leave_one_out else np.zeros((1, 1))
            count = side.sum() - out[:, 0]  # (rows,)
            total = means[side].sum(axis=0) - out * (means if leave_one_out else 0.0)  # (rows, dims)
            total_sq = sq[side].sum(axis=0) - out * (sq if leave_one_out else 0.0)
            sides.append((count, total, total_sq))
        counts = np.stack([c for c, _, _ in sides])  # (2, rows)
        valid = counts.min(axis=0) >= 2  # else too few files on one side to measure a spread
        if not valid.any():
            continue
        safe = np.maximum(counts, 1)[:, :, None]
        side_means = np.stack([tot for _, tot, _ in sides]) / safe
        centre = (sides[0][1] + sides[1][1]) / np.maximum(counts.sum(axis=0), 1)[:, None]
        between = sum(counts[i][:, None] * (side_means[i] - centre) ** 2 for i in range(2))
        within = sum(sides[i][2] - counts[i][:, None] * side_means[i] ** 2 for i in range(2))
        dof = np.maximum(counts.sum(axis=0) - 2, 1)[:, None]
        var = np.maximum(within, 0.0) / dof  # (rows, dims)
        prior = var.copy()
        for a, b, _ in blocks:
            prior[:, a:b] = var[:, a:b].mean(axis=1, keepdims=True)
        var = (_VARIANCE_PRIOR_DOF * prior + dof * var) / (_VARIANCE_PRIOR_DOF + dof)
        ratios += valid[:, None] * between / (var + 1e-12)
        measured += valid
    f = ratios / np.maximum(measured, 1)[:, None]
    block_f = np.stack([f[:, a:b].mean(axis=1) for a, b, _ in blocks], axis=1)  # (rows, blocks)
    rel = block_f**_RELEVANCE_POWER
    usable = (measured > 0) & np.isfinite(rel).all(axis=1) & (rel.max(axis=1) > 0)
    rel[~usable] = 1.0
    if not dims:
        return rel if leave_one_out else rel[0]
    files = len(means) - (1 if leave_one_out else 0)
    share = _DIM_SHRINK / (_DIM_SHRINK + max(files - 2, 1))
    dim_rel = np.ones_like(f)
    for j, (a, b, _) in enumerate(blocks):
        shrunk = (1.0 - share) * f[:, a:b] + share * block_f[:, j : j + 1]
        dim_rel[:, a:b] = np.maximum(shrunk, 0.0) ** _DIM_POWER
    dim_rel[~(usable & np.isfinite(dim_rel).all(axis=1))] = 1.0
    return (rel, dim_rel) if leave_one_out else (rel[0], dim_rel[0])
