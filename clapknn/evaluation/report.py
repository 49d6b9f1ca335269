"""What an evaluation measured: :class:`EvaluationReport` (its tables, the text ``clapknn
evaluate`` prints, and the files it writes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .baselines import METHODS

__all__ = ["EvaluationReport"]

_METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "bal.acc",
    "macro_f1": "macro-F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
}
_METHOD_LABELS = {"majority": "majority class", "centroid": "nearest centroid", "logreg": "logistic regression"}


@dataclass
class EvaluationReport:
    """What :func:`evaluate` measured.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per setting (``snippet_seconds``, ``protocol`` "episodes"/"cv", ``shots``,
        ``method``, ``k``, ``weights``): the mean of each metric over episodes or folds, its
        standard deviation (``<metric>_sd``), its chance level (``chance_<metric>``) and ``n_runs``.
    runs : pandas.DataFrame
        One row per setting and episode/fold, with every metric and chance level.
    per_tag : pandas.DataFrame
        Per setting and tag: precision, recall, ROC-AUC, PR-AUC (mean and sd) and their chance levels.
    confusion : dict
        ``(snippet_seconds, protocol, shots, method, k, weights) -> (n_tags, n_tags)`` counts summed
        over episodes/folds (rows: true tag, columns: predicted; single-label only).
    tags : list of str
    multilabel : bool
    headline : dict
        The kNN setting the summary leads with (``k``, ``weights``, ``snippet_seconds``).
    config : dict
        The settings of the run.
    plots, files : dict of name -> Path
        What was written to ``out_dir``.
    notes, skipped : list
    spaces : pandas.DataFrame
        When the encoder lets the vote choose its space (``standardize="auto"``): per snippet
        length and episode/fold, the space chosen and the leave-one-group-out vote share of each.
    predictions : pandas.DataFrame or None
        With ``evaluate(..., predictions=True)``: one row per query track, setting and
        episode/fold (the setting's columns, ``run``, ``path``, ``group``, ``tags``, ``predicted``,
        ``correct``); the mean of ``correct`` over a run's rows is its accuracy.
    """

    table: Any
    runs: Any
    per_tag: Any
    confusion: dict
    tags: list[str]
    multilabel: bool
    headline: dict
    config: dict
    dataset: dict
    plots: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    embeddings: dict = field(default_factory=dict, repr=False)
    spaces: Any = None
    predictions: Any = None

    def rows(self, *, method: str | None = None, protocol: str | None = None, snippet_seconds=None,
             k: int | None = None, weights: str | None = None):
        """Rows of :attr:`table` matching the given settings (kNN rows default to the headline k
        and weighting; baselines have no k or weighting)."""
        t = self.table
        if protocol is not None:
            t = t[t["protocol"] == protocol]
        ss = self.headline["snippet_seconds"] if snippet_seconds is None else snippet_seconds
        t = t[np.isclose(t["snippet_seconds"], ss)]
        if method is not None:
            t = t[t["method"] == method]
            if method == "knn":
                t = t[(t["k"] == (k or self.headline["k"])) & (t["weights"] == (weights or self.headline["weights"]))]
        return t

    def best(self, metric: str = "balanced_accuracy", *, protocol: str = "episodes", shots: int | None = None):
        """The kNN setting with the highest mean ``metric`` (over all snippet lengths, k and
        weightings), at ``shots`` (default: the largest evaluated). Chosen on the evaluation
        itself, so its figure is optimistic; compare settings, not this number with others."""
        t = self.table[(self.table["method"] == "knn") & (self.table["protocol"] == protocol)]
        if protocol == "episodes":
            shots = int(t["shots"].max()) if shots is None else shots
            t = t[t["shots"] == shots]
        if not len(t):
            return None
        return t.loc[t[metric].idxmax()]

    # ------------------------------------------------------------------ text
    def text(self, metrics: Sequence[str] | None = None) -> str:
        """The report as plain text (what ``clapknn evaluate`` prints)."""
        metrics = list(metrics or (["accuracy", "balanced_accuracy", "macro_f1", "roc_auc"] if not self.multilabel
                                   else ["balanced_accuracy", "macro_f1", "roc_auc", "pr_auc"]))
        d, h = self.dataset, self.headline
        counts = ", ".join(f"{t} {n}" for t, n in d["tag_counts"].items())
        lines = [
            f"{d['n_tracks']} tracks in {d['n_groups']} groups, {len(self.tags)} tags "
            f"({'multi-label' if self.multilabel else 'single-label'}: {counts}); encoder {d['encoder']}",
            f"track-level scores, mean ± sd over episodes/folds; kNN k={h['k']} {h['weights']}, "
            f"{h['snippet_seconds']:g} s snippets; 'chance' = a guesser that ignores the audio",
        ]

        def fmt(row, m):
            v, sd = row[m], row[f"{m}_sd"]
            if not np.isfinite(v):
                return "-"
            return f"{v:.2f}±{sd:.2f}" if np.isfinite(sd) else f"{v:.2f}"

        def block(title, sub):
            out = [f"\n{title}", f"{'':<6}{'method':<24}" + "".join(f"{_METRIC_LABELS[m]:>13}" for m in metrics)]
            keys = sub[["protocol", "shots"]].drop_duplicates().itertuples(index=False)
            for protocol, shots in keys:
                rows = sub[(sub["protocol"] == protocol) & _same(sub["shots"], shots)]
                first = True
                for method in METHODS:
                    r = rows[rows["method"] == method]
                    if not len(r):
                        continue
                    r = r.iloc[0]
                    name = f"kNN (k={h['k']}, {h['weights']})" if method == "knn" else _METHOD_LABELS[method]
                    label = (f"{int(shots)}" if protocol == "episodes" else "cv") if first else ""
                    out.append(f"{label:<6}{name:<24}" + "".join(f"{fmt(r, m):>13}" for m in metrics))
                    first = False
                r = rows.iloc[0]
                out.append(f"{'':<6}{'chance':<24}" + "".join(
                    f"{r['chance_' + m]:>13.2f}" if np.isfinite(r["chance_" + m]) else f"{'-':>13}" for m in metrics))
            return out

        head = self.table[np.isclose(self.table["snippet_seconds"], h["snippet_seconds"])]
        head = head[(head["method"] != "knn") | ((head["k"] == h["k"]) & (head["weights"] == h["weights"]))]
        ep = head[head["protocol"] == "episodes"]
        if len(ep):
            n_ep = int(ep["n_runs"].max())
            lines += block(f"few-shot episodes ({n_ep} per row; shots = labelled files per tag)", ep)
        cv = head[head["protocol"] == "cv"]
        if len(cv):
            lines += block(f"grouped {self.config.get('folds_run') or self.config['folds']}-fold cross-validation", cv)

        knn = self.table[self.table["method"] == "knn"]
        proto = "episodes" if len(ep) else "cv"
        main_metric = "balanced_accuracy"
        ks, ws = sorted(knn["k"].unique()), list(dict.fromkeys(knn["weights"]))
        if len(ks) * len(ws) > 1:
            sub = knn[(knn["protocol"] == proto) & np.isclose(knn["snippet_seconds"], h["snippet_seconds"])]
            cols = sorted(sub["shots"].dropna().unique()) if proto == "episodes" else [np.nan]
            lines.append(f"\nkNN settings: {_METRIC_LABELS[main_metric]} by k and weighting "
                         f"({h['snippet_seconds']:g} s snippets{'; columns = shots' if proto == 'episodes' else ''})")
            lines.append(f"{'k':>4} {'weights':<11}" + "".join(f"{int(c) if np.isfinite(c) else 'cv':>8}" for c in cols))
            for k in ks:
                for w in ws:
                    vals = []
                    for c in cols:
                        r = sub[(sub["k"] == k) & (sub["weights"] == w) & ((sub["shots"] == c) if np.isfinite(c) else True)]
                        vals.append(f"{r[main_metric].iloc[0]:>8.2f}" if len(r) else f"{'-':>8}")
                    lines.append(f"{k:>4} {w:<11}" + "".join(vals))
        lengths = sorted(self.table["snippet_seconds"].unique())
        if len(lengths) > 1:
            sub = knn[(knn["protocol"] == proto) & (knn["k"] == h["k"]) & (knn["weights"] == h["weights"])]
            cols = sorted(sub["shots"].dropna().unique()) if proto == "episodes" else [np.nan]
            lines.append(f"\nsnippet length: kNN {_METRIC_LABELS[main_metric]} (k={h['k']}, {h['weights']}"
                         f"{'; columns = shots' if proto == 'episodes' else ''})")
            lines.append(f"{'seconds':>8}" + "".join(f"{int(c) if np.isfinite(c) else 'cv':>8}" for c in cols))
            for s in lengths:
                vals = []
                for c in cols:
                    r = sub[np.isclose(sub["snippet_seconds"], s) & ((sub["shots"] == c) if np.isfinite(c) else True)]
                    vals.append(f"{r[main_metric].iloc[0]:>8.2f}" if len(r) else f"{'-':>8}")
                lines.append(f"{s:>8g}" + "".join(vals))
        best = self.best(main_metric, protocol=proto)
        if best is not None:
            at = f" at {int(best['shots'])} shots" if proto == "episodes" else ""
            lines.append(
                f"\nbest kNN setting{at}: k={int(best['k'])}, {best['weights']}, {best['snippet_seconds']:g} s snippets: "
                f"{_METRIC_LABELS[main_metric]} {best[main_metric]:.2f} (chosen on this evaluation, so optimistic)"
            )
        pt = self.per_tag
        if len(pt):
            key = self._headline_key()
            sub = pt
            for col, v in zip(("snippet_seconds", "protocol", "shots", "method", "k", "weights"), key):
                sub = sub[_same(sub[col], v)]
            if len(sub):
                where = f"{int(key[2])} shots" if key[1] == "episodes" else "cross-validation"
                lines.append(f"\nper tag (kNN, {where}): mean ± sd; chance in brackets")
                lines.append(f"{'tag':<16}{'precision':>18}{'recall':>18}{'ROC-AUC':>12}{'PR-AUC':>18}")
                for _, r in sub.iterrows():
                    lines.append(
                        f"{str(r['tag'])[:15]:<16}"
                        f"{r['precision']:>7.2f}±{r['precision_sd']:.2f} [{r['chance_precision']:.2f}]"
                        f"{r['recall']:>7.2f}±{r['recall_sd']:.2f} [{r['chance_recall']:.2f}]"
                        f"{r['roc_auc']:>12.2f}"
                        f"{r['pr_auc']:>7.2f}±{r['pr_auc_sd']:.2f} [{r['chance_pr_auc']:.2f}]"
                    )
        if self.spaces is not None and len(self.spaces):
            sp = self.spaces[np.isclose(self.spaces["snippet_seconds"], h["snippet_seconds"])]
            parts = []
            for (protocol, shots), g in sp.groupby(["protocol", "shots"], dropna=False, sort=True):
                label = f"{int(shots)} shots" if protocol == "episodes" else "cv"
                parts.append(f"{label} {g['standardized'].mean():.0%}")
            lines.append("\nvote space chosen by leave-one-group-out on the examples (share standardised): " + ", ".join(parts))
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def _headline_key(self) -> tuple:
        h = self.headline
        ep = self.table[self.table["protocol"] == "episodes"]
        if len(ep):
            return (h["snippet_seconds"], "episodes", float(ep["shots"].max()), "knn", h["k"], h["weights"])
        return (h["snippet_seconds"], "cv", float("nan"), "knn", h["k"], h["weights"])

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write ``summary.csv``, ``runs.csv``, ``per_tag.csv``, ``report.json``, ``report.txt``,
        ``predictions.csv`` (when the predictions were kept) and (with ``plots``) the PNG plots
        into ``out_dir``."""
        from ..output import write_table

        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        self.files["summary"] = write_table(self.table, out / "summary.csv")
        self.files["runs"] = write_table(self.runs, out / "runs.csv")
        self.files["per_tag"] = write_table(self.per_tag, out / "per_tag.csv")
        if self.predictions is not None:
            self.files["predictions"] = write_table(self.predictions, out / "predictions.csv")
        payload = {
            "dataset": self.dataset,
            "config": self.config,
            "headline": self.headline,
            "tags": self.tags,
            "multilabel": self.multilabel,
            "notes": self.notes,
            "skipped": [list(s) for s in self.skipped],
            "table": json.loads(self.table.to_json(orient="records", double_precision=6)),
        }
        (out / "report.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        self.files["json"] = out / "report.json"
        (out / "report.txt").write_text(self.text() + "\n", encoding="utf-8")
        self.files["text"] = out / "report.txt"
        if plots:
            from .plots import write_plots

            self.plots.update(write_plots(self, out))
        return dict(self.files)


def _same(column, value):
    """Boolean mask of ``column == value`` where NaN equals NaN."""
    if isinstance(value, float) and np.isnan(value):
        return column.isna()
    return column == value
