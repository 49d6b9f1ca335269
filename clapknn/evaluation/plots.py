"""PNG plots of an :class:`~clapknn.evaluation.report.EvaluationReport` (matplotlib, Agg back end).

matplotlib is imported, and its back end set, only inside :func:`write_plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_plots", "PLOTS"]

#: The plots :func:`write_plots` can make (each only when the report has what it needs).
PLOTS = ("confusion", "learning_curve", "snippet_length", "embedding_map")

_COLORS = {"knn": "#1f5fa8", "majority": "#8c8c8c", "centroid": "#d98c1f", "logreg": "#3a9a4a"}
_LABELS = {"knn": "kNN vote", "majority": "majority class", "centroid": "nearest centroid", "logreg": "logistic regression"}
_METRIC = "balanced_accuracy"


def _setting(report) -> str:
    h = report.headline
    return f"k={h['k']}, {h['weights']}, {h['snippet_seconds']:g} s snippets"


def _confusion(report, plt, path: Path) -> Path | None:
    key = report._headline_key()
    cm = None
    for ck, m in report.confusion.items():
        same = all((a == b) or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))
                   or (isinstance(a, float) and isinstance(b, float) and np.isclose(a, b)) for a, b in zip(ck, key))
        if same:
            cm = m
    if cm is None:
        return None
    n = len(report.tags)
    rows = cm.sum(axis=1, keepdims=True)
    share = cm / np.maximum(rows, 1)
    size = 1.6 + 0.75 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(n), report.tags, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), report.tags)
    ax.set_xlabel("predicted tag")
    ax.set_ylabel("true tag")
    where = f"{int(key[2])} shots per tag" if key[1] == "episodes" else "cross-validation"
    ax.set_title(f"kNN confusion, {where}\n({_setting(report)}; rows sum to 1)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _learning_curve(report, plt, path: Path) -> Path | None:
    t = report.table
    h = report.headline
    t = t[(t["protocol"] == "episodes") & np.isclose(t["snippet_seconds"], h["snippet_seconds"])]
    t = t[(t["method"] != "knn") | ((t["k"] == h["k"]) & (t["weights"] == h["weights"]))]
    if t["shots"].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for method in ("knn", "logreg", "centroid", "majority"):
        r = t[t["method"] == method].sort_values("shots")
        if not len(r):
            continue
        x, y, sd = r["shots"].to_numpy(), r[_METRIC].to_numpy(), r[f"{_METRIC}_sd"].to_numpy()
        ax.plot(x, y, marker="o", color=_COLORS[method], label=_LABELS[method], lw=2.2 if method == "knn" else 1.4)
        ax.fill_between(x, y - sd, y + sd, color=_COLORS[method], alpha=0.15 if method == "knn" else 0.08, lw=0)
    c = t.groupby("shots")[f"chance_{_METRIC}"].mean()
    ax.plot(c.index, c.to_numpy(), ls="--", color="black", lw=1, label="chance")
    shots = sorted(t["shots"].unique())
    return _finish_curve(plt, fig, ax, path, shots, [str(int(s)) for s in shots], "labelled files per tag (shots)",
                         f"Few-shot learning curve ({_setting(report)})")


def _snippet_length(report, plt, path: Path) -> Path | None:
    t = report.table
    h = report.headline
    if t["snippet_seconds"].nunique() < 2:
        return None
    t = t[(t["method"] == "knn") & (t["k"] == h["k"]) & (t["weights"] == h["weights"])]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ep = t[t["protocol"] == "episodes"]
    series = [(f"{int(s)} shots", ep[ep["shots"] == s]) for s in sorted(ep["shots"].unique())]
    cv = t[t["protocol"] == "cv"]
    if len(cv):
        series.append(("cross-validation", cv))
    cmap = plt.get_cmap("viridis")
    for i, (label, r) in enumerate(series):
        r = r.sort_values("snippet_seconds")
        x, y, sd = r["snippet_seconds"].to_numpy(), r[_METRIC].to_numpy(), r[f"{_METRIC}_sd"].to_numpy()
        color = cmap(i / max(len(series) - 1, 1) * 0.9)
        ax.plot(x, y, marker="o", color=color, label=label)
        ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.1, lw=0)
    ax.axhline(float(t[f"chance_{_METRIC}"].mean()), ls="--", color="black", lw=1, label="chance")
    lengths = sorted(t["snippet_seconds"].unique())
    return _finish_curve(plt, fig, ax, path, lengths, [f"{s:g}" for s in lengths], "snippet length (seconds)",
                         f"Snippet length (kNN k={h['k']}, {h['weights']})")


def _finish_curve(plt, fig, ax, path: Path, ticks, labels, xlabel: str, title: str) -> Path:
    """Log x axis with the measured points as ticks, labels, grid and legend; save and close."""
    ax.set_xscale("log")
    ax.set_xticks(ticks, labels)
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("balanced accuracy (track level)")
    ax.set_title(f"{title}\nmean ± sd over episodes", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _embedding_map(report, plt, path: Path, *, seed: int = 0) -> Path | None:
    from ..encoders.base import l2_normalize

    emb = report.embeddings.get(report.headline["snippet_seconds"])
    if emb is None or emb.n_tracks < 5:
        return None
    # one point per track: the mean of its snippet vectors
    sums = np.zeros((emb.n_tracks, emb.vectors.shape[1]))
    np.add.at(sums, emb.track, emb.vectors)
    X = l2_normalize(sums)
    X = X - X.mean(axis=0)
    if emb.n_tracks > 30:
        from sklearn.manifold import TSNE

        perplexity = float(min(30, (emb.n_tracks - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(X)
        method = "t-SNE (cosine)"
    else:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(X)
        method = "PCA"
    first = [ts[0] if len(ts) else "" for ts in emb.tags]
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    cmap = plt.get_cmap("tab10" if len(report.tags) <= 10 else "tab20")
    size = 14 if emb.n_tracks > 300 else 30
    for j, tag in enumerate(report.tags):
        m = np.array([f == tag for f in first])
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=size, color=cmap(j % cmap.N), alpha=0.75, label=f"{tag} ({int(m.sum())})",
                       edgecolors="none")
    ax.set_xticks([])
    ax.set_yticks([])
    multi = " (first tag of each track)" if report.multilabel else ""
    ax.set_title(f"Embedding space, one point per track{multi}\n{method} of {report.dataset['encoder']} vectors, "
                 f"{report.headline['snippet_seconds']:g} s snippets", fontsize=9)
    ax.legend(fontsize=8, markerscale=1.5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report, out_dir: str | Path, *, prefix: str = "") -> dict[str, Path]:
    """Write the plots that apply to ``report`` as ``<out_dir>/<prefix><name>.png``.

    Returns ``{name: path}`` for each plot written (see :data:`PLOTS`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {
        "confusion": _confusion,
        "learning_curve": _learning_curve,
        "snippet_length": _snippet_length,
        "embedding_map": _embedding_map,
    }
    written = {}
    for name, make in makers.items():
        if name == "confusion" and report.multilabel:
            continue
        p = make(report, plt, out / f"{prefix}{name}.png")
        if p is not None:
            written[name] = p
    return written
