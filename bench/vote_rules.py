"""Scratch comparison of vote-space rules on the suite's cached embeddings (dev parts only).

Every variant is fitted on each episode's examples alone and scored as ``evaluate`` scores the
defaults: k = 5, similarity weighting, mean pooling, at most 6 query snippets per track.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_sets  # noqa: E402

SETS = ("emopia", "emopia-valence", "emopia-arousal", "mode", "instrument", "meter", "composer", "energy")


def load(name, split):
    from clapknn.evaluation import embed_examples
    from clapknn.labels import Example, ExampleSet

    folder = suite_sets.cache_root() / f"{name}-{suite_sets.set_version(name)}"
    if not (folder / "labels.csv").exists():
        raise SystemExit(f"{name}: not built yet")
    rows = [r for r in suite_sets.read_labels(folder / "labels.csv") if r["split"] == split]
    examples = ExampleSet([Example(Path(r["path"]), tuple(r["tags"].split(";")), r["group"]) for r in rows])
    return embed_examples(examples, "features", snippet_seconds=10.0, workers=0,
                          cache=suite_sets.cache_root() / "embeddings")


def unit(X):
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def file_means(Z, Y, inv):
    n = inv.max() + 1
    c = np.bincount(inv, minlength=n).astype(float)
    m = np.zeros((n, Z.shape[1]))
    np.add.at(m, inv, Z)
    t = np.zeros((n, Y.shape[1]))
    np.add.at(t, inv, Y)
    return m / c[:, None], t / c[:, None] > 0.5


def f_ratios(means, has, min_side=2, eta=None, d0=0.0, blocks=None):
    """Per dim: mean over measurable tags (tag vs rest, at least ``min_side`` files on each side) of
    the one-way F of file means; None if none. ``eta``: each F bounded as ``eta``-scaled share of
    variance explained, F·(eta + dof) / (F + dof) (dof = files − 2)."""
    tot, cnt = np.zeros(means.shape[1]), 0
    for t in range(has.shape[1]):
        a, b = means[has[:, t]], means[~has[:, t]]
        if len(a) < min_side or len(b) < min_side:
            continue
        mu = means.mean(0)
        between = len(a) * (a.mean(0) - mu) ** 2 + len(b) * (b.mean(0) - mu) ** 2
        within = ((a - a.mean(0)) ** 2).sum(0) + ((b - b.mean(0)) ** 2).sum(0)
        s2 = within / (len(means) - 2)
        if d0:  # moderated: each dimension's within-tag variance shrunk towards the mean over the dimensions
            dof = len(means) - 2
            if blocks is None:
                prior = s2.mean()
            else:  # the mean over the dimension's own block
                prior = np.concatenate([np.full(b - a, s2[a:b].mean()) for a, b, _ in blocks])
            s2 = (d0 * prior + dof * s2) / (d0 + dof)
        F = between / (s2 + 1e-12)
        if eta is not None:
            dof = len(means) - 2
            F = F * (eta + dof) / (F + dof)
        tot += F
        cnt += 1
    return None if cnt == 0 else tot / cnt


class Space:
    """A fitted search space: standardise on the support, weight, normalise."""

    def __init__(self, blocks, rule):
        self.blocks = blocks  # list of (a, b, w)
        self.rule = rule

    def fit(self, X, Y, inv):
        U = unit(X.astype(np.float64))
        sd = U.std(0)
        pooled = np.sqrt(np.mean(sd**2))
        self.mu = U.mean(0)
        self.scale = np.sqrt(sd**2 + (0.1 * pooled) ** 2) + 1e-12
        Z = (U - self.mu) / self.scale
        r = self.rule
        D = X.shape[1]
        self.dimw = np.ones(D)
        self.bw = np.array([w for _, _, w in self.blocks])
        self.proj = None
        means, has = file_means(Z, Y, inv)
        if r.get("rank"):
            from scipy.stats import rankdata
            F = f_ratios(rankdata(means, axis=0), has)
        else:
            F = f_ratios(means, has, min_side=r.get("min_side", 2), eta=r.get("eta"), d0=r.get("d0", 0.0),
                         blocks=self.blocks if r.get("d0_block") else None)
        if F is None and r.get("snip1"):
            F = f_ratios(Z, Y > 0)
            if F is not None:
                F = F ** r.get("snip_damp", 1.0)
        if F is not None and r.get("rel", "block") != "none":
            kind = r.get("rel", "block")
            p = r.get("power", 0.5)
            if kind == "block":
                fb = np.array([F[a:b].mean() for a, b, _ in self.blocks])
                if r.get("excess"):
                    fb = np.maximum(fb - r.get("excess"), r.get("floor", 0.0))
                self.bw = self.bw * fb**p
            elif kind == "dim":
                f = F.copy()
                if r.get("excess"):
                    f = np.maximum(f - r["excess"], r.get("floor", 0.0))
                alpha = r.get("shrink", 0.0)  # towards the block's mean
                if r.get("kappa"):
                    nu = max(len(means) - 2, 1)
                    alpha = r["kappa"] / (r["kappa"] + nu)
                fb = np.concatenate([np.full(b - a, f[a:b].mean()) for a, b, _ in self.blocks])
                f = (1 - alpha) * f + alpha * fb
                self.dimw = f**p
                if r.get("blockrel"):
                    g = np.array([F[a:b].mean() for a, b, _ in self.blocks])
                    if r.get("block_kappa"):  # shrunk towards the mean over the blocks
                        share = r["block_kappa"] / (r["block_kappa"] + max(len(means) - 2, 1))
                        g = (1 - share) * g + share * g.mean()
                    if r.get("block_excess") is not None:  # the block's F above what noise gives
                        g = np.maximum(g - r["block_excess"], r.get("block_floor", 0.05))
                    self.bw = self.bw * g ** r["blockrel"]
        if r.get("loo") and len(np.unique(inv)) > Y.shape[1]:
            lr = self._loo_relevance(Z * self.dimw, Y, inv, r)
            if r.get("loo_mix") is not None and F is not None:
                fb = np.array([F[a:b].mean() for a, b, _ in self.blocks])
                self.bw = np.array([w for _, _, w in self.blocks]) * fb ** r["loo_mix"] * lr
            else:
                self.bw = np.array([w for _, _, w in self.blocks]) * lr
        if r.get("align") and F is not None:
            src = Z * self.dimw if r.get("align_weighted", True) else Z
            same = inv[:, None] == inv[None, :]
            tag = (Y @ Y.T) > 0
            pos, neg = tag & ~same, ~tag & ~same
            d = []
            for a, b, _ in self.blocks:
                U = unit(src[:, a:b])
                K = U @ U.T
                if pos.any() and neg.any():
                    sd = K[~same].std() + 1e-12
                    d.append((K[pos].mean() - K[neg].mean()) / sd)
                else:
                    d.append(1.0)
            d = np.maximum(np.array(d), 0)
            if d.max() > 0:
                base = np.array([w for _, _, w in self.blocks])
                fb = np.array([F[a:b].mean() for a, b, _ in self.blocks])
                self.bw = base * d ** r.get("align_power", 1.0) * fb ** r.get("align_fmix", 0.0)
        if r.get("lda"):
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            lab = Y.argmax(1)
            src = means if r.get("lda_on") == "files" else Z
            labs = has.argmax(1) if r.get("lda_on") == "files" else lab
            if len(np.unique(labs)) > 1 and min(np.bincount(labs)) >= 2:
                lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=r.get("lda_shrink", "auto")).fit(src, labs)
                self.proj = lda
                P = lda.transform(Z)
                self.psd = P.std(0) + 1e-12
        return self

    def _loo_relevance(self, Z, Y, inv, r):
        """Per block: how much more of a sample's leave-one-group-out vote (10 nearest of other
        groups, similarity-weighted, that block alone) goes to its own tags than chance gives."""
        same = inv[:, None] == inv[None, :]
        own = (Y @ Y.T) > 0
        rel = []
        k = 10
        for a, b, _ in self.blocks:
            U = unit(Z[:, a:b])
            S = U @ U.T
            S[same] = -np.inf
            kk = min(k, (~same).sum(1).min())
            top = np.argsort(-S, axis=1, kind="stable")[:, :kk]
            s = np.take_along_axis(S, top, 1)
            w = np.maximum(s, 0)
            w[w.sum(1) <= 0] = 1
            share = (w * np.take_along_axis(own, top, 1)).sum(1) / w.sum(1)
            # chance: the share of other groups' samples that carry the own tags
            chance = (own & ~same).sum(1) / (~same).sum(1)
            g = np.bincount(inv, weights=share - chance) / np.bincount(inv)
            rel.append(g.mean())
        rel = np.maximum(np.array(rel), 0) ** r.get("loo_power", 1.0)
        if rel.max() <= 0:
            return np.ones(len(rel))
        return rel / rel.max() + r.get("loo_floor", 0.0)

    def apply(self, X):
        U = unit(X.astype(np.float64))
        Z = (U - self.mu) / self.scale * self.dimw
        if self.rule.get("blocks", True):
            parts = [w * unit(Z[:, a:b]) for (a, b, _), w in zip(self.blocks, self.bw)]
        else:
            parts = [Z * np.concatenate([np.full(b - a, w / np.sqrt(b - a)) for (a, b, _), w in zip(self.blocks, self.bw)])]
        S = unit(np.concatenate(parts, axis=1))
        if self.proj is not None:
            P = self.proj.transform(Z / self.dimw) / self.psd
            lam = self.rule.get("lda_weight", 1.0)
            S = unit(np.concatenate([S, lam * P / np.sqrt(P.shape[1])], axis=1))
        return S


def hubness(S_s, inv, h=5):
    """Per example snippet: the mean similarity of its ``h`` nearest snippets of other files (how
    central it sits among the examples; a hub attracts queries whatever their tags)."""
    K = S_s @ S_s.T
    K[inv[:, None] == inv[None, :]] = -np.inf
    h = max(1, min(h, int(np.isfinite(K).sum(1).min())))
    return np.sort(K, axis=1)[:, ::-1][:, :h].mean(1)


def loo_hub(S_s, Y_s, inv, betas, k=5, hub_h=5, margin=0.0):
    """The hub penalty whose leave-one-file-out vote over the examples is right most often (each
    file's snippets voted on by the other files' snippets); ties and gains within ``margin`` go to
    the smallest."""
    K = S_s @ S_s.T
    same = inv[:, None] == inv[None, :]
    r = hubness(S_s, inv, hub_h)
    n = inv.max() + 1
    truth = np.zeros((n, Y_s.shape[1]))
    np.add.at(truth, inv, Y_s)
    best, best_acc = betas[0], -1.0
    for b in betas:
        R = np.where(same, -np.inf, K - b * r[None, :])
        kk = min(k, int((~same).sum(1).min()))
        idx = np.argsort(-R, axis=1, kind="stable")[:, :kk]
        w = np.maximum(np.take_along_axis(K, idx, 1), 0)
        w[w.sum(1) <= 0] = 1
        v = np.einsum("nk,nkt->nt", w, Y_s[idx]) / w.sum(1, keepdims=True)
        f = np.zeros((n, Y_s.shape[1]))
        np.add.at(f, inv, v)
        acc = float(np.mean(truth[np.arange(n), f.argmax(1)] > 0))
        if acc > best_acc + (margin if best_acc >= 0 else 0):
            best, best_acc = b, acc
    return best


def scores(S_s, Y_s, S_q, qpos, n_q, k=5, power=1.0, hub=0.0, inv=None, hub_h=5):
    sims = S_q @ S_s.T
    k = min(k, S_s.shape[0])
    rank = sims - hub * hubness(S_s, inv, hub_h)[None, :] if hub else sims
    idx = np.argsort(-rank, axis=1, kind="stable")[:, :k]
    s = np.take_along_axis(sims, idx, 1)
    w = np.maximum(s, 0) ** power
    dead = w.sum(1) <= 0
    w[dead] = 1
    v = np.einsum("nk,nkt->nt", w, Y_s[idx]) / w.sum(1, keepdims=True)
    out = np.zeros((n_q, Y_s.shape[1]))
    np.add.at(out, qpos, v)
    return out / np.bincount(qpos, minlength=n_q)[:, None]


def _track_means(S_q, qpos, n_q):
    """Each query track's mean snippet vector, unit length."""
    q = np.zeros((n_q, S_q.shape[1]))
    np.add.at(q, qpos, S_q)
    return unit(q)


def _centroid_cosines(S_s, Y_s, inv, S_q, qpos, n_q):
    """Per query track, the cosine of its mean vector with each tag's centroid (the mean of the
    tag's files' mean vectors, unit length)."""
    means, has = file_means(S_s, Y_s, inv)
    C = unit(np.stack([means[has[:, t]].mean(0) for t in range(Y_s.shape[1])]))
    return _track_means(S_q, qpos, n_q) @ C.T


def centroid_scores(S_s, Y_s, inv, S_q, qpos, n_q):
    """Per query track: 1 for the tag whose centroid is nearest its mean vector, 0 for the others."""
    return np.eye(Y_s.shape[1])[_centroid_cosines(S_s, Y_s, inv, S_q, qpos, n_q).argmax(1)]


def centroid_soft(S_s, Y_s, inv, S_q, qpos, n_q, temperature=0.05):
    """Per query track: a softmax over the tags of the cosines with their centroids."""
    e = np.exp(_centroid_cosines(S_s, Y_s, inv, S_q, qpos, n_q) / temperature)
    return e / e.sum(1, keepdims=True)


def file_scores(S_s, Y_s, inv, S_q, qpos, n_q, k=10):
    """Per query track: the similarity-weighted vote of the ``k`` example files whose mean vector
    is nearest the track's mean vector (a vote over files, not snippets)."""
    means, has = file_means(S_s, Y_s, inv)
    sims = _track_means(S_q, qpos, n_q) @ unit(means).T
    k = min(k, means.shape[0])
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    w = np.maximum(np.take_along_axis(sims, idx, 1), 0)
    w[w.sum(1) <= 0] = 1
    return np.einsum("nk,nkt->nt", w, has[idx].astype(float)) / w.sum(1, keepdims=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--shots", default="1,5,10,20")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--variants", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--shuffle", type=int, default=None, help="deal the groups' tags at random (this seed): pure-noise labels")
    args = ap.parse_args()
    from clapknn.encoders.features import FeaturesEncoder
    from clapknn.evaluation import few_shot_episodes
    from clapknn.evaluation.embeddings import query_windows

    blocks = FeaturesEncoder.feature_blocks()
    V = dict(VARIANTS)
    names = [v for v in args.variants.split(",") if v] or list(V)
    res = {}
    for name in args.sets.split(","):
        t0 = time.time()
        emb = load(name, args.split)
        if args.shuffle is not None:
            groups = np.asarray(emb.groups).astype(str)
            names_g = sorted(set(groups))
            first = {g: emb.tags[list(groups).index(g)] for g in names_g}
            dealt = np.random.default_rng(args.shuffle).permutation(len(names_g))
            new = {g: first[names_g[d]] for g, d in zip(names_g, dealt)}
            emb = emb.relabel({p: new[g] for p, g in zip(emb.paths, groups)})
        classes = sorted({t for ts in emb.tags for t in ts})
        Yt = np.array([[t in ts for t in classes] for ts in emb.tags], dtype=float)
        gid = np.unique(np.asarray(emb.groups).astype(str), return_inverse=True)[1]
        read = query_windows(emb, 6)
        for shots in map(int, args.shots.split(",")):
            eps = few_shot_episodes(emb.tags, emb.groups, shots=shots, n_episodes=args.episodes, seed=0)
            mf = suite_sets.cache_root() / "features" / f"mfcc-{name}-{suite_sets.set_version(name)}-{args.split}.npz"
            if mf.exists():
                z = np.load(mf)
                if list(z["paths"]) == list(emb.paths):
                    m = z["values"]
                    lab = Yt.argmax(1)
                    acc = []
                    for sup, qry in eps:
                        d = ((m[qry][:, None, :] - m[sup][None, :, :]) ** 2).sum(-1)
                        acc.append(float(np.mean(lab[sup][d.argmin(1)] == lab[qry])))
                    res.setdefault(name, {}).setdefault(str(shots), {})["MFCC"] = acc
            for v in names:
                accs = []
                for sup, qry in eps:
                    sm = np.isin(emb.track, sup)
                    qm = np.isin(emb.track, qry) & read
                    Xs, Xq = emb.vectors[sm], emb.vectors[qm]
                    Ys = Yt[emb.track[sm]]
                    inv = np.unique(gid[emb.track[sm]], return_inverse=True)[1]
                    qt = np.unique(emb.track[qm])
                    qpos = np.searchsorted(qt, emb.track[qm])
                    sp = Space(blocks, V[v]).fit(Xs, Ys, inv)
                    kk = V[v].get("k", 5)
                    if V[v].get("per_tag") and Ys.shape[1] > 2:
                        # one space per tag, its relevance measured on that tag against the rest;
                        # each tag's score is its share of the vote in its own space
                        mix = V[v]["per_tag"]  # the per-tag scores' share, the rest the one space's
                        sc = np.zeros((len(qt), Ys.shape[1]))
                        for t in range(Ys.shape[1]):
                            pair = np.stack([Ys[:, t], 1.0 - Ys[:, t]], axis=1)
                            sp_t = Space(blocks, V[v]).fit(Xs, pair, inv)
                            sc[:, t] = scores(sp_t.apply(Xs), Ys, sp_t.apply(Xq), qpos, len(qt), k=kk)[:, t]
                        if mix < 1.0:
                            sc = mix * sc + (1 - mix) * scores(sp.apply(Xs), Ys, sp.apply(Xq), qpos, len(qt), k=kk)
                        accs.append(float(np.mean(sc.argmax(1) == Yt[qt].argmax(1))))
                        continue
                    if V[v].get("kcap"):
                        kk = int(max(1, min(kk, Ys.sum(0).min())))
                    Ss, Sq = sp.apply(Xs), sp.apply(Xq)
                    hub = V[v].get("hub", 0.0)
                    if V[v].get("hub_loo") and inv.max() + 1 > Ys.shape[1]:
                        hub = loo_hub(Ss, Ys, inv, V[v]["hub_loo"], k=kk, margin=V[v].get("hub_margin", 0.0))
                    sc = scores(Ss, Ys, Sq, qpos, len(qt), k=kk, power=V[v].get("wpow", 1.0),
                                hub=hub, inv=inv, hub_h=V[v].get("hub_h", 5))
                    if V[v].get("local_mean"):  # per tag: the mean of its m most similar snippets
                        m_ = V[v]["local_mean"]
                        sims = Sq @ Ss.T
                        per = np.stack([np.sort(np.where(Ys[:, t] > 0, sims, -np.inf), axis=1)[:, ::-1][:, :m_].mean(1)
                                        for t in range(Ys.shape[1])], axis=1)
                        sc = np.zeros((len(qt), Ys.shape[1]))
                        np.add.at(sc, qpos, per)
                    if V[v].get("centroid"):  # the nearest tag centroid instead of the k nearest snippets
                        sc = centroid_scores(Ss, Ys, inv, Sq, qpos, len(qt))
                    if V[v].get("file_mix"):  # blended with a vote of the nearest example files
                        m = V[v]["file_mix"]
                        sc = (1 - m) * sc + m * file_scores(Ss, Ys, inv, Sq, qpos, len(qt), k=V[v].get("file_k", 10))
                    if V[v].get("cent_mix"):  # blended with a soft nearest-centroid score
                        m = V[v]["cent_mix"]
                        sc = (1 - m) * sc + m * centroid_soft(Ss, Ys, inv, Sq, qpos, len(qt))
                    accs.append(float(np.mean(sc.argmax(1) == Yt[qt].argmax(1))))
                res.setdefault(name, {}).setdefault(str(shots), {})[v] = accs
        print(f"[{name} {time.time() - t0:.0f}s]", file=sys.stderr)
        report(res, names, [name])
    if args.out:
        Path(args.out).write_text(json.dumps(res))
    print("\n==== all")
    report(res, names, list(res))


def report(res, names, sets):
    base = names[0]
    names = names + ["MFCC"]
    for name in sets:
        for shots, by in res[name].items():
            if "MFCC" not in by:
                by["MFCC"] = by[base]
            b = np.array(by[base])
            cells = []
            for v in names:
                a = np.array(by[v])
                d = a - b
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0
                cells.append(f"{v}={a.mean():.3f}" + ("" if v == base else f"({d.mean():+.3f}±{se:.3f})"))
            print(f"{name:15s} {shots:>2s}  " + "  ".join(cells))
    sys.stdout.flush()


VARIANTS = {
    "cur": dict(rel="block", power=0.5),
    "norel": dict(rel="none"),
    "blk1": dict(rel="block", power=1.0),
    "blkx": dict(rel="block", power=0.5, excess=1.0, floor=0.05),
    "dim": dict(rel="dim", power=0.5, blockrel=0.5),
    "dimx": dict(rel="dim", power=0.5, excess=1.0, floor=0.05, blockrel=0.5),
    "dimx_s5": dict(rel="dim", power=0.5, excess=1.0, floor=0.05, shrink=0.5, blockrel=0.5),
    "dim_nb": dict(rel="dim", power=0.5, blocks=False),
    "dimx_nb": dict(rel="dim", power=0.5, excess=1.0, floor=0.05, blocks=False),
    "dim_s25": dict(rel="dim", power=0.5, blockrel=0.5, shrink=0.25),
    "dim_s5": dict(rel="dim", power=0.5, blockrel=0.5, shrink=0.5),
    "dim_p1": dict(rel="dim", power=1.0, blockrel=0.5),
    "dim_br1": dict(rel="dim", power=0.5, blockrel=1.0),
    "dim_br0": dict(rel="dim", power=0.5),
    "dim_nb_br": dict(rel="dim", power=0.5, blocks=False, blockrel=0.5),
    "dim_k5": dict(rel="dim", power=0.5, blockrel=0.5, kappa=5),
    "dim_k10": dict(rel="dim", power=0.5, blockrel=0.5, kappa=10),
    "dim_k20": dict(rel="dim", power=0.5, blockrel=0.5, kappa=20),
    "dim_k10_br75": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10),
    "dim_br75": dict(rel="dim", power=0.5, blockrel=0.75),
    "dim_s25_br75": dict(rel="dim", power=0.5, blockrel=0.75, shrink=0.25),
    "dimloo": dict(rel="dim", power=0.5, kappa=10, loo=True, loo_power=1.0),
    "dimloo_mix": dict(rel="dim", power=0.5, kappa=10, loo=True, loo_power=0.5, loo_mix=0.375),
    "dimloo_mix2": dict(rel="dim", power=0.5, kappa=10, loo=True, loo_power=0.5, loo_mix=0.25),
    "loo_mix": dict(rel="none", loo=True, loo_power=0.5, loo_mix=0.25),
    "new": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10),
    "new_k3": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, k=3),
    "new_k10": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, k=10),
    "new_kcap": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, kcap=True),
    "new_cent": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, centroid=True),
    "new_file10": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, file_mix=1.0, file_k=10),
    "new_mixfile10": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, file_mix=0.5, file_k=10),
    "new_mixcent": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, cent_mix=0.25),
    "new_hub5": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, hub=0.5),
    "new_hub10": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, hub=1.0),
    "new_hub10h2": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, hub=1.0, hub_h=2),
    "new_hubloo": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, hub_loo=(0.0, 0.5, 1.0)),
    "new_hubloo_m": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, hub_loo=(0.0, 0.5, 1.0), hub_margin=0.05),
    "new_hub25": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, hub=0.25),
    "new_bk5": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, block_kappa=5),
    "new_bk10b1": dict(rel="dim", power=0.5, blockrel=1.0, kappa=10, block_kappa=10),
    "new_min3": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, min_side=3),
    "new_eta2": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, eta=2.0),
    "new_eta5": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, eta=5.0),
    "new_d02": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=2.0),
    "new_d04": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=4.0),
    "new_d08": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=8.0),
    "new_d02b": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=2.0, d0_block=True),
    "new_d04b": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=4.0, d0_block=True),
    "new_d08b": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=8.0, d0_block=True),
    "new_d16b": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=16.0, d0_block=True),
    "ovr": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=4.0, d0_block=True, per_tag=1.0),
    "ovr_mix": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, d0=4.0, d0_block=True, per_tag=0.5),
    "new_lm2": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, local_mean=2),
    "new_lm3": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, local_mean=3),
    "new_bx1": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, block_excess=1.0, block_floor=0.1),
    "new_bx05": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, block_excess=0.5, block_floor=0.1),
    "new_bx1f3": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, block_excess=1.0, block_floor=0.3),
    "new_b1": dict(rel="dim", power=0.5, blockrel=1.0, kappa=10),
    "new_w3": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, wpow=3.0),
    "new_k10w3": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, k=10, wpow=3.0),
    "al1": dict(rel="dim", power=0.5, kappa=10, align=True, align_power=1.0),
    "al05": dict(rel="dim", power=0.5, kappa=10, align=True, align_power=0.5),
    "al15": dict(rel="dim", power=0.5, kappa=10, align=True, align_power=1.5),
    "al1u": dict(rel="dim", power=0.5, kappa=10, align=True, align_power=1.0, align_weighted=False),
    "almix": dict(rel="dim", power=0.5, kappa=10, align=True, align_power=0.5, align_fmix=0.375),
    "new_s1": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, snip1=True),
    "new_s1d": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, snip1=True, snip_damp=0.5),
    "new_rank": dict(rel="dim", power=0.5, blockrel=0.75, kappa=10, rank=True),
    "loo1": dict(rel="none", loo=True, loo_power=1.0),
    "loo05": dict(rel="none", loo=True, loo_power=0.5),
    "loo2": dict(rel="none", loo=True, loo_power=2.0),
    "loo1f": dict(rel="none", loo=True, loo_power=1.0, loo_floor=0.1),
    "cur_lda": dict(rel="block", power=0.5, lda=True, lda_weight=1.0),
    "cur_ldaf": dict(rel="block", power=0.5, lda=True, lda_on="files", lda_weight=1.0),
}

if __name__ == "__main__":
    main()
