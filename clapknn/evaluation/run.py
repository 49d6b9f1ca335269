"""The evaluation run: how good will tagging be on a labelled set, and with which settings?

Every file's snippets are embedded once per snippet length (:func:`embed_examples`); all splits,
neighbour counts, vote weightings and baselines then run on those cached vectors, so a full sweep
costs little more than one embedding pass.

Protocol (what :func:`evaluate` does):

- **Groups.** Each file belongs to a group (its source track or album: the ``group`` column of a
  labels CSV; by default the file itself). A group is never on both sides of a split.
- **Few-shot episodes** (:func:`few_shot_episodes`): ``n`` labelled files per tag, each from a
  different group, drawn at random; every file of a group that was not drawn is a query. Repeated
  ``n_episodes`` times per shot count; an episode depends only on ``(seed, shots, episode)``, so every
  method, setting and snippet length sees the same episodes.
- **Cross-validation** (:func:`grouped_folds`): stratified k-fold over groups; fewer folds (with a
  note) when some tag has fewer groups than folds were asked for.
- **Small sets.** Shot counts some tag cannot supply are left out with a note, and so is a tag whose
  files all come from one group (it can never be on both sides of a split); when nothing can be
  run, :func:`evaluate` raises a :class:`~clapknn.errors.ParameterError` saying why.
- **Predictions** are per track, exactly as ``clapknn tag`` makes them: per-snippet scores (kNN vote,
  or a baseline) pooled over the track's snippets by :func:`clapknn.tagging.aggregate.aggregate`.
- **Baselines** on the same embeddings and splits: ``majority`` (the most frequent tag of the
  support set), ``centroid`` (nearest class mean, cosine) and ``logreg`` (scikit-learn logistic
  regression on standardised snippet vectors).
- **Metrics** (track level): accuracy, balanced accuracy, macro-F1, per-tag precision and recall, and
  ROC-AUC and PR-AUC (average precision) per tag and macro. Each has a chance level beside it: the
  expected score of a guesser that ignores the audio (single-label: picks a tag uniformly at random;
  multi-label: gives each tag with probability 1/2), computed from the queries' own tag frequencies.

>>> from clapknn.evaluation import evaluate
>>> report = evaluate("examples/", shots=(1, 5), out_dir="eval")   # doctest: +SKIP
>>> print(report.text())                                            # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import LabelError, ParameterError
from ..labels import tag_indicator
from ..options import (
    DEFAULT_AGGREGATE, DEFAULT_BATCH_SIZE, DEFAULT_K, DEFAULT_SEED, DEFAULT_SNIPPET_SECONDS, DEFAULT_SPACE, DEFAULT_TAG_SNIPPETS,
    DEFAULT_WEIGHTS, DEFAULT_WORKERS, EVAL_EPISODES, EVAL_FOLDS, EVAL_KS, EVAL_SHOTS, WEIGHTS, check_max_snippets, check_seconds,
)
from .baselines import centroid_scores, logreg_scores, majority_scores
from .embeddings import Embedded, embed_examples, query_windows
from .metrics import METRICS, chance_levels, predict_tags, track_metrics
from .report import EvaluationReport
from .splits import few_shot_episodes, fold_count, grouped_folds

__all__ = ["SHOTS", "evaluate", "knn_scores", "track_scores"]

#: Default shot counts (labelled files per tag) of the few-shot episodes.
SHOTS = EVAL_SHOTS


def track_scores(snippet_scores: np.ndarray, qgroups: np.ndarray, n: int, method: str) -> np.ndarray:
    from ..tagging.aggregate import aggregate

    return aggregate(snippet_scores, qgroups, method=method, n_groups=n)


def _prediction_table(kept, base: Embedded, Y: np.ndarray, tags: Sequence[str]):
    """One row per query track, setting and episode/fold: its path, group, true and predicted tags
    (``;``-joined) and whether they are the same."""
    import pandas as pd

    names = np.array(tags, dtype=object)

    def joined(indicator: np.ndarray) -> list[str]:
        return [";".join(names[row]) for row in indicator.astype(bool)]

    truth = joined(Y)
    groups = np.asarray(base.groups).astype(str)
    frames = []
    for setting, q_tracks, pred in kept:
        frames.append(pd.DataFrame({
            **setting,  # one value per setting, repeated on every row
            "path": [str(base.paths[i]) for i in q_tracks], "group": groups[q_tracks],
            "tags": [truth[i] for i in q_tracks], "predicted": joined(pred),
            "correct": (pred.astype(bool) == Y[q_tracks].astype(bool)).all(axis=1),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def knn_scores(X_s, Y_s, X_q, ks, weights, qgroups, n_q, agg, options=None, groups=None):
    """Track scores for every (k, weighting), and the fitted estimator: ``({(k, weighting):
    scores}, estimator)``.

    The estimator is fitted as :class:`~clapknn.tagging.tagger.Tagger` fits it (``groups``: the file or
    group of each support snippet). What the fit decides from the examples (the search space,
    the block weights) does not depend on ``n_neighbors`` or ``weights``
    (:class:`~clapknn.vote.KNNTagger`), so one fit and one search with the largest k give, for
    every (k, weighting), the scores of a :class:`~clapknn.tagging.tagger.Tagger` made with that k and
    weighting.
    """
    from ..vote import KNNTagger, vote_scores

    kmax = max(ks)
    est = KNNTagger(kmax, weights=weights[0], **dict(options or {}))
    est.fit(X_s, Y_s, groups=groups)  # indicator y: classes are its columns
    sims, ids = est.similarities(X_q, kmax)
    labels = Y_s[ids].astype(np.float64)
    out = {}
    for k in ks:
        kk = min(k, sims.shape[1])
        for w in weights:
            out[(k, w)] = track_scores(vote_scores(sims[:, :kk], labels[:, :kk], w), qgroups, n_q, agg)
    return out, est


def _as_tuple(value, kind=float) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return (kind(value),)
    return tuple(kind(v) for v in value)


def evaluate(
    examples,
    *,
    labels: str | Path | None = None,
    encoder="features",
    encoder_options: Mapping[str, Any] | None = None,
    shots: int | Sequence[int] = SHOTS,
    n_episodes: int = EVAL_EPISODES,
    folds: int = EVAL_FOLDS,
    k: int | Sequence[int] = EVAL_KS,
    weights: str | Sequence[str] = WEIGHTS,
    snippet_seconds: float | Sequence[float] = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    aggregate: str = DEFAULT_AGGREGATE,
    space: str = DEFAULT_SPACE,
    baselines: bool = True,
    seed: int = DEFAULT_SEED,
    out_dir: str | Path | None = None,
    plots: bool = True,
    workers: int = DEFAULT_WORKERS,
    cache=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_snippets: int | str | None = DEFAULT_TAG_SNIPPETS,
    progress: bool = False,
    predictions: bool = False,
) -> EvaluationReport:
    """Measure few-shot kNN tagging (and baselines) on a labelled set.

    Parameters
    ----------
    examples : path, ExampleSet, Embedded or sequence of Embedded
        Labelled files (a folder per tag, or a CSV of ``path,tags[,group]``), or embeddings already
        made by :func:`embed_examples` (one per snippet length).
    labels : path, optional
        A CSV of ``path,tags[,group]`` for ``examples`` (as for :func:`clapknn.build_index`).
    encoder, encoder_options
        The embedding model (``"features"`` or ``"clap"``) and its settings.
    shots : int or sequence of int
        Labelled files per tag in the few-shot episodes; shot counts some tag cannot supply
        (fewer than ``shots + 1`` groups) are left out with a note. Empty: no episodes.
    n_episodes : int
        Episodes per shot count.
    folds : int
        Grouped stratified cross-validation folds; 0 for none. Capped, with a note, at the
        number of groups of the tag with the fewest (:func:`fold_count`).
    k, weights
        kNN settings to sweep (each k with each weighting).
    snippet_seconds : float or sequence of float
        Snippet lengths to sweep; each costs one embedding pass.
    hop_seconds : float, optional
        Hop between snippets (default: the snippet length).
    aggregate : {"mean", "max", "vote"}
        Snippet → track pooling, as ``clapknn tag --aggregate``.
    space : {"auto", "plain", "standardized"}
        The vote's search space, as ``clapknn tag --space`` (:func:`~clapknn.vote.space_options`).
    baselines : bool
        Also run the majority-class, nearest-centroid and logistic-regression baselines.
    seed : int
        Seeds the episodes and folds; the same seed gives the same splits.
    out_dir : path, optional
        Write tables, JSON, text and PNG plots here (see :meth:`EvaluationReport.save`).
    plots : bool
        Write the PNG plots (with ``out_dir``).
    workers : int
        Decoding processes of the embedding engine (see :func:`~clapknn.evaluation.embeddings.embed_examples`).
    cache : bool, path or EmbeddingCache, optional
        Reuse embeddings across runs (see :func:`embed_examples`).
    max_snippets : int or "all"
        Snippets read per query track, as :class:`clapknn.Tagger` reads them (the same default,
        spread by :func:`clapknn.audio.snippet.sample_indices`); the support files keep every snippet, as
        :func:`clapknn.build_index` does.
    progress : bool
        Progress bars (embedding, then the episodes and folds) on stderr, when it is a terminal.
    predictions : bool
        Also keep every query track's predicted tags, per setting and episode/fold
        (:attr:`EvaluationReport.predictions`, ``predictions.csv`` with ``out_dir``): which tracks
        are missed, and how often, for error analysis or a standard error over tracks or groups.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    LabelError
        When fewer than two tags have usable examples.
    ParameterError
        For bad settings, or when no shot count and no cross-validation can be run.
    """
    import pandas as pd

    from ..tagging.aggregate import AGGREGATIONS
    from ..vote import space_options

    shots_t = tuple(sorted(set(_as_tuple(shots, int)))) if shots is not None else ()
    ks = tuple(sorted(set(_as_tuple(k, int))))
    ws = tuple(dict.fromkeys(_as_tuple(weights, str)))
    if any(s < 1 for s in shots_t):
        raise ParameterError(f"shots must be positive integers, got {shots_t}")
    if not ks or any(v < 1 for v in ks):
        raise ParameterError(f"k must be positive integers, got {ks}")
    bad = [w for w in ws if w not in WEIGHTS]
    if bad or not ws:
        raise ParameterError(f"unknown weights {', '.join(map(repr, bad)) or '(none)'}; choose from {', '.join(WEIGHTS)}")
    if aggregate not in AGGREGATIONS:
        raise ParameterError(f"unknown aggregation {aggregate!r}; choose one of {', '.join(AGGREGATIONS)}")
    space_options({}, space)  # refuses an unknown space before any embedding
    if n_episodes < 1 and shots_t:
        raise ParameterError(f"n_episodes must be at least 1, got {n_episodes}")
    if folds < 0 or folds == 1:
        raise ParameterError(f"folds must be 0 (none) or at least 2, got {folds}")
    if not shots_t and not folds:
        raise ParameterError("nothing to evaluate: give some shots or folds >= 2")
    if not _as_tuple(snippet_seconds, float):
        raise ParameterError("give at least one snippet length")
    for length in _as_tuple(snippet_seconds, float):
        check_seconds("snippet length", length)
    check_seconds("hop", hop_seconds, allow_none=True)
    max_snippets = check_max_snippets(max_snippets)
    if out_dir is not None and Path(out_dir).expanduser().exists() and not Path(out_dir).expanduser().is_dir():
        raise ParameterError(f"the output folder {out_dir} is a file")

    # ---- embeddings, once per snippet length
    if isinstance(examples, Embedded):
        embedded = [examples]
    elif isinstance(examples, (list, tuple)) and examples and all(isinstance(e, Embedded) for e in examples):
        embedded = list(examples)
    else:
        from ..encoders import Encoder, get_encoder
        from ..labels import ExampleSet, load_examples

        example_set = examples if isinstance(examples, ExampleSet) else load_examples(examples, labels=labels)
        if not example_set.examples:
            raise LabelError(f"no labelled examples found in {examples if not isinstance(examples, ExampleSet) else 'the example set'}")
        enc = encoder if isinstance(encoder, Encoder) else get_encoder(encoder, **dict(encoder_options or {}))
        embedded = [
            embed_examples(example_set, enc, snippet_seconds=s, hop_seconds=hop_seconds, batch_size=batch_size,
                           workers=workers, cache=cache, progress=progress)
            for s in sorted(set(_as_tuple(snippet_seconds, float)))
        ]
    embedded.sort(key=lambda e: e.snippet_seconds)
    lengths = [e.snippet_seconds for e in embedded]
    if len(set(lengths)) != len(lengths):
        raise ParameterError(f"one embedding per snippet length, got lengths {lengths}")
    # every length must be scored on the same tracks, so the splits line up
    common = set(embedded[0].paths)
    for e in embedded[1:]:
        common &= set(e.paths)
    notes: list[str] = []
    if any(len(e.paths) != len(common) for e in embedded):
        dropped = max(len(e.paths) for e in embedded) - len(common)
        notes.append(f"{dropped} file(s) gave vectors at some snippet lengths only; left out of all")
        embedded = [e.relabel({p: t for p, t in zip(e.paths, e.tags) if p in common}) for e in embedded]
    base = embedded[0]
    order = {p: i for i, p in enumerate(base.paths)}
    for i, e in enumerate(embedded[1:], start=1):  # align track numbering with the first
        perm = np.array([order[p] for p in e.paths], dtype=np.int64)
        durations = None
        if e.durations is not None:
            durations = np.empty_like(e.durations)
            durations[perm] = e.durations
        embedded[i] = replace(e, track=perm[e.track], paths=list(base.paths), tags=list(base.tags), groups=base.groups,
                              durations=durations)
    tags = sorted({t for ts in base.tags for t in ts})
    if len(tags) < 2:
        why = ""
        if base.skipped:
            where, reason = base.skipped[0]
            why = f"; {len(base.skipped)} file(s) skipped, e.g. {Path(where).name}: {reason}"
        raise LabelError(f"evaluation needs at least two tags with usable examples, found {tags or 'none'}{why}")
    # a tag whose files all come from one group can be neither queried against its own examples
    # nor cross-validated: leave it out (when two tags or more remain) rather than every split
    gid = np.unique(np.asarray(base.groups).astype(str), return_inverse=True)[1]
    n_groups_of = {t: len({g for ts, g in zip(base.tags, gid) if t in ts}) for t in tags}
    thin = [t for t in tags if n_groups_of[t] < 2]
    if thin and len(tags) - len(thin) >= 2:
        keep = {p: tuple(t for t in ts if t not in thin) for p, ts in zip(base.paths, base.tags)}
        embedded = [e.relabel(keep) for e in embedded]
        base = embedded[0]
        tags = [t for t in tags if t not in thin]
        notes.append(f"tag(s) {', '.join(thin)} left out: files from a single group (source file), and a tag needs "
                     f"at least 2 to be both labelled and queried")
    multilabel = any(len(ts) > 1 for ts in base.tags)
    Y = tag_indicator(base.tags, tags)
    groups = base.groups
    headline = {
        "k": DEFAULT_K if DEFAULT_K in ks else ks[0],
        "weights": DEFAULT_WEIGHTS if DEFAULT_WEIGHTS in ws else ws[0],
        "snippet_seconds": 10.0 if 10.0 in lengths else lengths[0],
    }

    # ---- splits (file indices), shared by every length, method and setting
    splits: list[tuple[str, float, int, np.ndarray, np.ndarray]] = []
    too_few: list[int] = []
    for s in shots_t:
        try:
            for e, (sup, qry) in enumerate(few_shot_episodes(base.tags, groups, shots=s, n_episodes=n_episodes, seed=seed)):
                splits.append(("episodes", float(s), e, sup, qry))
        except ParameterError as exc:
            if "groups per tag" not in str(exc):
                notes.append(f"{s}-shot episodes skipped: {exc}")
            else:
                too_few.append(s)
    if too_few:
        gid = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
        per_tag = ", ".join(f"{t} {len(set(gid[Y[:, j] == 1]))}" for j, t in enumerate(tags))
        notes.append(f"{'shots' if len(too_few) > 1 else 'shot count'} {', '.join(map(str, too_few))} skipped: "
                     f"n shots need n + 1 groups per tag (source tracks: the group column, else the files); groups per tag: {per_tag}")
    n_folds_run = 0
    if folds:
        try:
            cv_splits = grouped_folds(base.tags, groups, n_folds=folds, seed=seed)
        except ParameterError as exc:
            notes.append(f"cross-validation skipped: {exc}")
        else:
            n_folds_run = len(cv_splits)
            if n_folds_run < folds:
                why = fold_count(base.tags, groups, folds)[1]
                notes.append(f"cross-validation: {n_folds_run} folds instead of {folds}" + (f" ({why})" if why else ""))
            for f, (tr, te) in enumerate(cv_splits):
                splits.append(("cv", float("nan"), f, tr, te))
    if not splits:
        raise ParameterError("no evaluation could be run: " + "; ".join(notes))

    # the space choice of the vote leaves out whole groups (source tracks), as the splits do
    group_ids = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    run_rows: list[dict] = []
    tag_rows: list[dict] = []
    space_rows: list[dict] = []
    confusion: dict[tuple, np.ndarray] = {}
    kept: list[tuple[dict, np.ndarray, np.ndarray]] = []  # with predictions: (setting, query tracks, predicted)
    from ..encoders import track_context
    from ..progress import progress_bar

    bar = progress_bar(len(embedded) * len(splits), "evaluating", enabled=progress, unit="split")
    for emb in embedded:
        options = space_options(emb.knn_options, space)
        read = query_windows(emb, max_snippets)
        # a query is tagged from the windows tagging reads, its track context made from those alone
        read_vectors, read_track = track_context(emb.encoder, emb.vectors, emb.track, read), emb.track[read]
        for protocol, n_shots, rep, sup, qry in splits:
            s_mask = np.isin(emb.track, sup)
            q_rows = np.isin(read_track, qry)
            X_s, X_q = emb.vectors[s_mask], read_vectors[q_rows]
            Y_s = Y[emb.track[s_mask]]
            q_tracks = np.unique(read_track[q_rows])
            qpos = np.searchsorted(q_tracks, read_track[q_rows])
            n_q = len(q_tracks)
            y_true = Y[q_tracks]
            chance = chance_levels(y_true, multilabel)
            results: dict[tuple, np.ndarray] = {}
            knn, est = knn_scores(X_s, Y_s, X_q, ks, ws, qpos, n_q, aggregate, options,
                                   groups=group_ids[emb.track[s_mask]])
            if hasattr(est, "loo_score_"):
                space_rows.append({"snippet_seconds": emb.snippet_seconds, "protocol": protocol, "shots": n_shots,
                                   "run": rep, "standardized": bool(est.standardized_),
                                   "loo_standardized": est.loo_score_["standardized"],
                                   "loo_plain": est.loo_score_["plain"],
                                   "p_plain": est.loo_score_["p_value_plain"]})
            for (kk, w), sc in knn.items():
                results[("knn", kk, w)] = sc
            # the baselines work in the same space as the kNN search (standardised when it is)
            X_s, X_q = est.to_search_space(X_s), est.to_search_space(X_q)
            if baselines:
                results[("majority", 0, "")] = majority_scores(Y[sup], n_q)
                results[("centroid", 0, "")] = track_scores(centroid_scores(X_s, Y_s, X_q, multilabel), qpos, n_q, aggregate)
                results[("logreg", 0, "")] = track_scores(logreg_scores(X_s, Y_s, X_q, multilabel, seed), qpos, n_q, aggregate)
            for (method, kk, w), sc in results.items():
                pred = predict_tags(sc, multilabel)
                m, per = track_metrics(y_true, sc, pred, multilabel)
                key = dict(snippet_seconds=emb.snippet_seconds, protocol=protocol, shots=n_shots, method=method,
                           k=kk, weights=w)
                run_rows.append({**key, "run": rep, "n_support": len(sup), "n_queries": n_q, **m,
                                 **{f"chance_{name}": v for name, v in chance.items()}})
                if predictions:
                    kept.append(({**key, "run": rep}, q_tracks, pred))
                prev = y_true.mean(axis=0)
                q = 0.5 if multilabel else 1.0 / len(tags)
                for j, t in enumerate(tags):
                    tag_rows.append({**key, "run": rep, "tag": t, "precision": per["precision"][j],
                                     "recall": per["recall"][j], "roc_auc": per["roc_auc"][j],
                                     "pr_auc": per["pr_auc"][j], "support": int(per["support"][j]),
                                     "chance_precision": prev[j], "chance_recall": q,
                                     "chance_pr_auc": prev[j] if 0 < prev[j] < 1 else np.nan})
                if not multilabel:
                    ck = tuple(key.values())
                    cm = confusion.setdefault(ck, np.zeros((len(tags), len(tags)), dtype=np.int64))
                    np.add.at(cm, (y_true.argmax(axis=1), pred.argmax(axis=1)), 1)
            bar.update(1)

    bar.close()
    runs = pd.DataFrame(run_rows)
    keys = ["snippet_seconds", "protocol", "shots", "method", "k", "weights"]
    g = runs.groupby(keys, dropna=False, sort=False)
    table = g[list(METRICS)].mean()
    sd = g[list(METRICS)].std(ddof=0).add_suffix("_sd")
    ch = g[[f"chance_{m}" for m in METRICS]].mean()
    table = pd.concat([table, sd, ch, g.size().rename("n_runs"), g["n_queries"].mean()], axis=1).reset_index()
    table = table[keys + [c for m in METRICS for c in (m, f"{m}_sd")] + [f"chance_{m}" for m in METRICS] + ["n_runs", "n_queries"]]
    per_tag_runs = pd.DataFrame(tag_rows)
    gt = per_tag_runs.groupby(keys + ["tag"], dropna=False, sort=False)
    cols = ["precision", "recall", "roc_auc", "pr_auc"]
    per_tag = pd.concat(
        [gt[cols].mean(), gt[cols].std(ddof=0).add_suffix("_sd"),
         gt[["chance_precision", "chance_recall", "chance_pr_auc", "support"]].mean()], axis=1,
    ).reset_index()

    counts = {t: int(Y[:, j].sum()) for j, t in enumerate(tags)}
    enc_id = base.encoder or {}
    predicted = _prediction_table(kept, base, Y, tags) if predictions else None
    report = EvaluationReport(
        table=table, runs=runs, per_tag=per_tag, confusion=confusion, tags=tags, multilabel=multilabel, headline=headline,
        config=dict(shots=list(shots_t), n_episodes=n_episodes, folds=folds, folds_run=n_folds_run, k=list(ks), weights=list(ws),
                    snippet_seconds=lengths, hop_seconds=hop_seconds, aggregate=aggregate, space=space, baselines=baselines,
                    seed=seed),
        dataset=dict(n_tracks=base.n_tracks, n_groups=int(len(set(map(str, groups)))), tag_counts=counts,
                     encoder=enc_id.get("name", "?"), encoder_identity=enc_id),
        notes=notes, skipped=list(base.skipped), embeddings={e.snippet_seconds: e for e in embedded},
        spaces=pd.DataFrame(space_rows), predictions=predicted,
    )
    if out_dir is not None:
        report.save(out_dir, plots=plots)
    return report
