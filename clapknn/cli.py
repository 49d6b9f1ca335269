"""Command line: thin commands over the public API.

Exit codes: 0 success; 1 finished, but some inputs were skipped (each is listed with its reason);
2 error (bad arguments or input; one line ``clapknn: error: ...``, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from . import options as opt

EXIT_OK, EXIT_SKIPPED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _print_skipped(skipped, quiet: bool, limit: int = 20) -> None:
    """List skipped inputs on stderr (only the first ``limit`` when ``quiet``)."""
    if not skipped:
        return
    skipped = list(skipped)
    print(f"skipped {len(skipped)} input(s):", file=sys.stderr)
    shown = skipped[:limit] if quiet else skipped
    for where, reason in shown:
        print(f"  {where}: {reason}", file=sys.stderr)
    if len(shown) < len(skipped):
        print(f"  ... and {len(skipped) - len(shown)} more", file=sys.stderr)


def _encoder_options(args) -> dict:
    opts = {}
    for name in ("checkpoint", "device", "threads", "tokenizer_path", "precision"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    if getattr(args, "allow_download", False):
        opts["allow_download"] = True
    if getattr(args, "quiet", False):
        opts["progress"] = False  # no model-loading notice either
    return opts


def _parse_prompts(items: Sequence[str] | None) -> dict[str, list[str]]:
    from .errors import ParameterError

    prompts: dict[str, list[str]] = {}
    for item in items or []:
        tag, sep, text = item.partition("=")
        if not sep or not tag.strip() or not text.strip():
            raise ParameterError(f"--prompt must look like TAG=TEXT, got {item!r}")
        prompts.setdefault(tag.strip(), []).append(text.strip())
    return prompts


# --------------------------------------------------------------------------- commands
def cmd_build(args) -> int:
    """``clapknn build``: embed labelled examples and save an index."""
    from .tagging.tagger import INDEX_HOME
    from .tagging.build import build_index

    out = Path(args.out) if args.out else INDEX_HOME / Path(args.examples).resolve().stem
    options = _encoder_options(args)
    if args.from_shards:
        from .embedding.shards import index_from_shards

        _refuse_with_shards(args, ("--encoder", "encoder"), ("--snippet-seconds", "snippet_seconds"),
                            ("--hop-seconds", "hop_seconds"), ("--prompt", "prompt"), ("--checkpoint", "checkpoint"))
        index = index_from_shards(args.from_shards, args.examples, out, labels=args.labels)
    else:
        index = build_index(
            args.examples, out, labels=args.labels, encoder=args.encoder or opt.DEFAULT_ENCODER, encoder_options=options,
            snippet_seconds=_snippet_seconds(args), hop_seconds=args.hop_seconds, prompts=_parse_prompts(args.prompt),
            batch_size=args.batch_size, progress=not args.quiet, cache=_cache(args), workers=args.workers,
            allow_single_tag=args.allow_single_tag, max_snippets=_max_snippets(args, opt.DEFAULT_BUILD_SNIPPETS),
        )
    report = index.report
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    s = index.summary()
    per_tag = ", ".join(f"{t} {c['files']}" + (f"+{c['text']} text" if c["text"] else "") for t, c in s["tags"].items())
    print(
        f"built {out}: {report.n_used} file(s), {s['n_vectors']} vectors, encoder {s['encoder']['name']}, "
        f"{s['snippet_seconds']:g} s snippets; tags: {per_tag}"
        + (f"; lost (every example skipped): {', '.join(report.lost_tags)}" if report.lost_tags else "")
    )
    for tag, c in s["tags"].items():
        if c["files"] + c["text"] == 1:
            print(f"note: tag {tag!r} has a single example; its votes rest on that one file", file=sys.stderr)
    _print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def _max_snippets(args, default):
    """``--snippets N|all`` for the API (``None``: every snippet), else ``default``."""
    return default if args.snippets is None else opt.parse_max_snippets(args.snippets)


def _snippet_seconds(args) -> float:
    return opt.DEFAULT_SNIPPET_SECONDS if args.snippet_seconds is None else args.snippet_seconds


def _refuse_with_shards(args, *flags: tuple[str, str]) -> None:
    """``--from-shards`` takes the encoder and snippets from the shards: refuse settings it would ignore."""
    from .errors import ParameterError

    given = [flag for flag, name in flags if getattr(args, name, None) not in (None, [], False)]
    if given:
        raise ParameterError(
            f"--from-shards takes the encoder and the snippets from the shards; {', '.join(given)} cannot apply (leave "
            + ("it" if len(given) == 1 else "them") + " out)"
        )


def _check_resume(args) -> None:
    from .errors import ParameterError

    if not args.out or Path(args.out).suffix.lower() != ".csv":
        raise ParameterError("--resume needs --out RESULTS.csv (rows are appended as tracks are tagged)")
    clash = [o for o, on in (("--per-snippet", args.per_snippet), ("--explain", args.explain), ("--key-tempo", args.key_tempo),
                              ("--write", args.write), ("--dry-run", args.dry_run)) if on]
    if clash:
        raise ParameterError(f"--resume writes the per-track table only; it cannot be combined with {', '.join(clash)}")


def _tag_resumable(tagger, args) -> int:
    """``tag --resume``: stream rows into a CSV, skipping paths already there."""
    from .tagging.resume import tag_to_csv

    report = tag_to_csv(tagger, args.paths, args.out, resume=True, cache=_cache(args), workers=args.workers, progress=not args.quiet)
    already = f", {report.n_already} already in {args.out}" if report.n_already else ""
    print(f"tagged {report.n_tagged} of {report.n_files} track(s){already}; rows in {args.out}", file=sys.stderr)
    _print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_tag(args) -> int:
    """``clapknn tag``: tag files and folders; optionally explain the votes and write the tags into the files."""
    from .output import format_table, write_table
    from .tagging.tagger import Tagger

    if args.write or args.dry_run:
        from .filetags import check_field

        check_field(args.tag_field)  # fail before the tagging work, not after
    if args.resume:
        _check_resume(args)
    _check_out(args)
    tagger = Tagger(
        args.index, k=args.k, weights=args.weights, aggregate=args.aggregate, threshold=args.threshold,
        top_n=args.top_n, hop_seconds=args.hop_seconds, batch_size=args.batch_size,
        encoder_options=_encoder_options(args), space=args.space, max_snippets=_max_snippets(args, opt.DEFAULT_TAG_SNIPPETS),
    )
    for note in tagger.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.resume:
        return _tag_resumable(tagger, args)
    result = tagger.tag(args.paths, progress=not args.quiet, explain=args.explain, cache=_cache(args), workers=args.workers,
                        key_tempo=args.key_tempo and not args.per_snippet)
    table = result.snippets if args.per_snippet else result.tracks
    if args.out:
        write_table(table, args.out)
    if not args.quiet or not args.out:
        cols = ["path", "start", "end", "top"] if args.per_snippet else ["path", "tags", "score"]
        cols += [c for c in ("key", "mode", "bpm") if c in table.columns]
        print(format_table(table, columns=cols) if len(table) else "(no track tagged)")
        if args.explain and result.neighbors is not None and len(result.neighbors):
            print(f"\nnearest examples (similarity, tags, votes of {min(tagger.estimator.n_neighbors, len(tagger.index))} per snippet, file @ closest snippet):")
            tags_of = dict(zip(result.tracks["path"], result.tracks["tags"]))
            for path, group in result.neighbors.groupby("path", sort=False):
                print(f"{path} → {tags_of.get(path) or '(no tag)'}")
                for _, r in group.iterrows():
                    print(f"  {r['similarity']:.3f}  {r['neighbor_tags']:<16} {r['votes']:>3}  {r['neighbor']} @ {r['neighbor_start']:g}s")
    if args.out:
        print(f"wrote {len(table)} row(s) to {args.out}", file=sys.stderr)
    skipped = list(result.skipped)
    if args.write or args.dry_run:
        skipped += _write_file_tags(result.tracks, args)
    _print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _check_out(args) -> None:
    """Refuse a table ``--out`` that cannot be written before any work is done."""
    if getattr(args, "out", None):
        from .output import check_table_path

        check_table_path(args.out)


def _write_file_tags(tracks, args) -> list[tuple[str, str]]:
    """``tag --write``/``--dry-run``: put each track's tags into its file; returns the files not written."""
    from .filetags import write_track_tags

    changes = write_track_tags(tracks, field=args.tag_field, replace=args.replace_tags, dry_run=args.dry_run)
    shown = [c for c in changes if c.ok and not (args.quiet and c.status == "unchanged")]
    if shown:
        print("\nplanned file tags (dry run, nothing written):" if args.dry_run else "\nfile tags:")
    for c in shown:
        print(f"  {c.path}: {c.describe()}")
    count = {s: sum(c.status == s for c in changes) for s in ("written", "planned", "unchanged")}
    verb = f"would write {count['planned']}" if args.dry_run else f"wrote {count['written']}"
    print(f"{verb} file(s), {count['unchanged']} unchanged, {sum(not c.ok for c in changes)} not written", file=sys.stderr)
    return [(c.path, f"tags not written: {c.reason}") for c in changes if not c.ok]


def cmd_analyze(args) -> int:
    """``clapknn analyze``: key, mode and tempo of audio files, without ML."""
    from .analysis import analyze_files
    from .errors import ClapknnError
    from .labels import collect_audio
    from .output import format_table, write_table

    _check_out(args)
    problems: list[tuple[str, str]] = []
    files = collect_audio(args.paths, problems=problems)
    if not files:
        detail = "; ".join(f"{w}: {r}" for w, r in problems[:3])
        raise ClapknnError(f"nothing to analyse ({detail})" if detail else "nothing to analyse")
    table = analyze_files(files, profile=args.profile, errors="skip", progress=not args.quiet)
    skipped = problems + list(table.attrs.get("skipped", []))
    if args.out:
        write_table(table, args.out)
        print(f"wrote {len(table)} row(s) to {args.out}", file=sys.stderr)
    if not args.quiet or not args.out:
        print(format_table(table) if len(table) else "(no file analysed)")
    _print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_info(args) -> int:
    """``clapknn info``: what an index holds (encoder, snippet length, vectors, tags)."""
    import json

    from .tagging.tagger import load_index

    index = load_index(args.index)
    s = index.summary()
    vote = _vote_summary(index)
    if vote is not None:
        s["vote"] = vote
    if args.json:
        print(json.dumps(s, indent=2))
        return EXIT_OK
    enc = s["encoder"]
    print(f"index:     {args.index}")
    print(f"encoder:   {enc['name']} (" + ", ".join(f"{k}={v}" for k, v in enc.items() if k != "name") + ")")
    print(f"snippets:  {s['snippet_seconds']:g} s, hop {s['hop_seconds']:g} s")
    print(f"vectors:   {s['n_vectors']} of dim {s['dim']} from {s['n_files']} file(s)")
    print(f"created:   {s['created']}")
    print("tags:")
    for tag, c in s["tags"].items():
        text = f", {c['text']} text prompt(s)" if c["text"] else ""
        print(f"  {tag:<20} {c['files']:>5} file(s) {c['snippets']:>6} snippet(s){text}")
    if vote is not None and "error" in vote:
        print(f"vote:      cannot be set up with this clapknn: {vote['error']}")
    elif vote is not None:
        line = f"vote:      k={vote['k']}, {vote['weights']} weights, {vote['space']} space"
        if "loo_vote_share" in vote:
            shares = vote["loo_vote_share"]
            line += (f" (leave-one-out vote share: standardised {shares['standardized']:.2f}, plain "
                     f"{shares['plain']:.2f}, chance {shares['chance']:.2f}"
                     + (f"; plain space's gain p = {vote['p_value_plain']:.3f}" if "p_value_plain" in vote else "") + ")")
        print(line)
        if vote.get("block_relevance"):
            ranked = sorted(vote["block_relevance"].items(), key=lambda kv: -kv[1])
            print("relevance: " + ", ".join(f"{name} {value:.2f}" for name, value in ranked)
                  + ("" if vote["space"] == "standardised" else " (used in the standardised space)"))
    return EXIT_OK


def _vote_summary(index) -> dict | None:
    """The default tagger's vote on an index of the ``features`` encoder (cheap to rebuild): the
    space ``auto`` picks, the leave-one-out evidence and each feature block's relevance."""
    if index.encoder_identity.get("name") != "features":
        return None  # a model encoder is not loaded just to describe its (plain) vote
    from .encoders.features import FEATURE_BLOCKS
    from .errors import ClapknnError
    from .tagging.tagger import Tagger

    try:
        est = Tagger(index).estimator
    except ClapknnError as exc:  # e.g. an index of an older recipe
        return {"error": str(exc)}
    out = {"k": int(est.n_neighbors), "weights": est.weights, "space": "standardised" if est.standardized_ else "plain"}
    if hasattr(est, "loo_score_"):
        out["loo_vote_share"] = {k: round(float(v), 4) for k, v in est.loo_score_.items() if k != "p_value_plain"}
        if "p_value_plain" in est.loo_score_:  # the permutation test's p-value for the plain space's gain
            out["p_value_plain"] = round(float(est.loo_score_["p_value_plain"]), 4)
    if getattr(est, "block_relevance_", None) is not None:
        out["block_relevance"] = {name: round(float(r), 3) for name, r in zip(FEATURE_BLOCKS, est.block_relevance_)}
    return out


def _csv_list(text: str, kind, what: str) -> list:
    from .errors import ParameterError

    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"{what} must be a comma-separated list, got {text!r}") from None


def cmd_evaluate(args) -> int:
    """``clapknn evaluate``: few-shot episodes and grouped folds on labelled examples, with baselines."""
    from .evaluation import evaluate

    report = evaluate(
        args.examples, labels=args.labels, encoder=args.encoder, encoder_options=_encoder_options(args),
        shots=_csv_list(args.shots, int, "--shots"), n_episodes=args.episodes, folds=args.folds,
        k=_csv_list(args.k, int, "-k"), weights=_csv_list(args.weights, str, "--weights"),
        snippet_seconds=_csv_list(args.snippet_seconds, float, "--snippet-seconds"), hop_seconds=args.hop_seconds,
        aggregate=args.aggregate, space=args.space, baselines=not args.no_baselines, seed=args.seed, out_dir=args.out,
        plots=not args.no_plots, n_jobs=args.workers, cache=args.cache, batch_size=args.batch_size,
        progress=not args.quiet, max_snippets=_max_snippets(args, opt.DEFAULT_TAG_SNIPPETS),
    )
    print(report.text())
    if args.out:
        written = list(report.files.values()) + list(report.plots.values())
        print(f"wrote {len(written)} file(s) to {args.out}", file=sys.stderr)
    _print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_add(args) -> int:
    """``clapknn add``: add labelled examples to an index without rebuilding it."""
    from .incremental import add_examples

    index, report = add_examples(
        args.index, args.sources, tags=args.tag, labels=args.labels, out=args.out,
        encoder_options=_encoder_options(args), batch_size=args.batch_size, cache=_cache(args),
        workers=args.workers, progress=not args.quiet,
    )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    replaced = f", {len(report.replaced)} of them already indexed (replaced)" if report.replaced else ""
    print(
        f"added {len(report.added)} file(s){replaced} to {args.out or args.index}: "
        f"{report.n_vectors_before} -> {report.n_vectors_after} vectors; tags: {', '.join(index.tags)}"
    )
    _print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_remove(args) -> int:
    """``clapknn remove``: remove example files, folders or whole tags from an index."""
    from .incremental import remove_examples

    index, report = remove_examples(args.index, args.paths, tags=args.tag or (), out=args.out)
    untagged = f"; took tag(s) off {len(report.untagged)} example(s)" if report.untagged else ""
    print(
        f"removed {len(report.removed)} example(s){untagged} from {args.out or args.index}: "
        f"{report.n_vectors_before} -> {report.n_vectors_after} vectors; tags: {', '.join(index.tags)}"
    )
    if not args.quiet:
        for path in report.removed:
            print(f"  - {path}")
    _print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_index_library(args) -> int:
    """``clapknn index-library``: embed a music library for similarity search."""
    from .errors import ParameterError
    from .library import index_library

    if bool(args.paths) == bool(args.from_shards):
        raise ParameterError("give audio files/folders, or --from-shards SHARDS (not both)")
    if args.from_shards:
        from .embedding.shards import library_from_shards

        _refuse_with_shards(args, ("--encoder", "encoder"), ("--snippet-seconds", "snippet_seconds"),
                            ("--hop-seconds", "hop_seconds"), ("--checkpoint", "checkpoint"))
        lib = library_from_shards(args.from_shards, args.out, kind=args.kind, target_recall=args.target_recall)
    else:
        lib = index_library(
            args.paths, args.out, encoder=args.encoder or opt.DEFAULT_ENCODER, encoder_options=_encoder_options(args),
            snippet_seconds=_snippet_seconds(args), hop_seconds=args.hop_seconds, kind=args.kind,
            target_recall=args.target_recall, batch_size=args.batch_size, cache=_cache(args), workers=args.workers,
            progress=not args.quiet,
        )
    m = lib.manifest
    params = ", ".join(f"{k} {v}" for k, v in m["params"].items())
    measured = f"recall@10 {m['recall_at_10']:.3f} against exact search on {m['recall_queries']} tracks" if m["recall_queries"] else "exact search"
    print(f"indexed {len(lib)} track(s) into {args.out}: {m['kind']}" + (f" ({params})" if params else "") + f", {measured}")
    _print_skipped(lib.skipped, args.quiet)
    return EXIT_SKIPPED if lib.skipped else EXIT_OK


def cmd_similar(args) -> int:
    """``clapknn similar``: the library tracks nearest to a file."""
    from .library import similar
    from .output import format_table, write_table

    _check_out(args)
    table = similar(args.library, args.file, k=args.k, encoder_options=_encoder_options(args), cache=_cache(args))
    if args.out:
        write_table(table, args.out)
        print(f"wrote {len(table)} row(s) to {args.out}", file=sys.stderr)
    if not args.out or not args.quiet:
        print(format_table(table, columns=["rank", "similarity", "path"], float_digits=3) if len(table) else "(no neighbour)")
    return EXIT_OK


def cmd_embed_ray(args) -> int:
    """``clapknn embed-ray``: the embedding stage on a Ray cluster, written as parquet shards."""
    from .embedding.ray import embed_with_ray
    from .embedding.shards import shards_manifest

    out = embed_with_ray(
        args.paths, args.out, encoder=args.encoder or opt.DEFAULT_ENCODER, encoder_options=_encoder_options(args),
        snippet_seconds=_snippet_seconds(args), hop_seconds=args.hop_seconds, batch_size=args.batch_size,
        num_encoders=args.num_encoders, gpus_per_encoder=args.gpus_per_encoder, files_per_task=args.files_per_task,
        address=args.address,
        progress=not args.quiet, cache=_cache(args),
    )
    m = shards_manifest(out)  # the counts are in the manifest: the shards are not read again
    skipped = [tuple(p) for p in m["skipped_inputs"] + m["failures"]]
    print(f"wrote {m['n_vectors']} vectors of {m['n_files'] - len(m['failures'])} file(s) to {out}")
    _print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_cache(args) -> int:
    """``clapknn cache``: what the embedding cache holds; ``--clear`` empties it."""
    from .embedding.cache import EmbeddingCache, default_cache_dir

    root = Path(args.dir) if args.dir else default_cache_dir()
    if root is None:
        print("the embedding cache is switched off ($CLAPKNN_EMBEDDING_CACHE)")
        return EXIT_OK
    cache = EmbeddingCache(root)
    if args.clear:
        print(f"removed {cache.clear()} entries from {root}")
        return EXIT_OK
    s = cache.stats()
    print(f"embedding cache {root}: {s['entries']} entries, {s['bytes'] / 1e6:.1f} MB")
    for key, v in s["settings"].items():
        print(f"  {key}  {v['encoder'] or '?':<9} {v['entries']:>8} entries {v['bytes'] / 1e6:9.1f} MB")
    return EXIT_OK


def cmd_demo(args) -> int:
    """``clapknn demo``: build from a few bundled mood clips, tag the rest, print the accuracy."""
    from .demo import run_demo

    return run_demo(per_tag=args.per_tag, out=args.out, quiet=args.quiet)


# --------------------------------------------------------------------------- playlist (self-contained block)
def cmd_playlist(args) -> int:
    """``clapknn playlist``: .m3u8 playlists per tag (from a tag table, or an index and music), or "more like these"."""
    from .errors import ParameterError
    from .playlist import DEFAULT_SIMILAR_TRACKS, check_limits, describe, read_tag_table, similar_playlist, tag_playlists

    check_limits(args.min_score, args.max_tracks)  # before any work
    out_dir = Path(os.path.expanduser(args.out_dir))
    if not out_dir.is_dir():
        raise ParameterError(f"{args.out_dir}: folder does not exist; create it first")
    if args.absolute and args.relative_to:
        raise ParameterError("--absolute and --relative-to exclude each other")
    relative = not args.absolute
    if args.like:
        if not args.library or args.sources or args.index:
            raise ParameterError("--like SEED needs --library LIBRARY and no other sources or --index")
        playlists = [similar_playlist(
            args.library, args.like, out_dir, n=DEFAULT_SIMILAR_TRACKS if args.max_tracks is None else args.max_tracks,
            min_similarity=args.min_score, relative=relative, relative_to=args.relative_to, name=args.name, cache=_cache(args),
        )]
        skipped = list(playlists[0].skipped)
    else:
        if args.library:
            raise ParameterError("--library is for --like SEED playlists")
        if not args.sources:
            raise ParameterError("give a tag table (clapknn tag --out), or music files/folders with --index")
        skipped = []
        if args.index:
            from .tagging.tagger import Tagger

            tagger = Tagger(args.index, k=args.k, threshold=args.threshold, encoder_options=_encoder_options(args))
            result = tagger.tag(args.sources, progress=not args.quiet, cache=_cache(args), workers=args.workers)
            table, skipped = result.tracks, list(result.skipped)
        else:
            if len(args.sources) != 1:
                raise ParameterError("give one tag table, or music files/folders with --index")
            table = read_tag_table(args.sources[0])
        tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
        playlists = tag_playlists(table, out_dir, tags=tags, min_score=args.min_score, max_tracks=args.max_tracks,
                                  relative=relative, relative_to=args.relative_to, prefix=args.prefix)
        for p in playlists:
            skipped += p.skipped
    for line in describe(playlists):
        print(line)
    _print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _add_playlist_parser(sub) -> None:
    p = sub.add_parser(
        "playlist", help="write .m3u8 playlists: one per tag, or tracks like a few seeds",
        description="One extended-M3U playlist per tag, best score first, from a tag table (clapknn tag --out) or "
        "from music tagged with --index; or, with --like, the library tracks nearest a few seed tracks. Media "
        "servers (Navidrome, Jellyfin, MPD) import .m3u8 files from the music folder.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="a tag table (.csv/.json/.parquet), or with --index audio files/folders")
    p.add_argument("--out-dir", default=".", metavar="DIR", help="folder for the playlists (default: here)")
    p.add_argument("--index", help="tag SOURCE with this index first (default: SOURCE is a tag table)")
    p.add_argument("-k", "--k", type=int, default=opt.DEFAULT_K, help=f"with --index: neighbours per snippet (default {opt.DEFAULT_K})")
    p.add_argument("--threshold", type=float, help="with --index: minimum score for a tag, 0 to 1")
    p.add_argument("--tags", metavar="A,B", help="only these tags (default: every tag)")
    p.add_argument("--min-score", type=float, help="leave out tracks scoring below this (tag score, or similarity with --like)")
    p.add_argument("--max-tracks", type=int, metavar="N", help="at most N tracks per playlist (default: all; 50 with --like)")
    p.add_argument("--absolute", action="store_true", help="absolute paths (default: relative to the playlist's folder)")
    p.add_argument("--relative-to", metavar="DIR", help="paths relative to DIR instead (e.g. MPD's music_directory)")
    p.add_argument("--prefix", default="", help="put before each tag in the playlist names, e.g. 'mood - '")
    p.add_argument("--like", action="append", metavar="SEED", help="a seed track of the library (repeatable): write one playlist of its nearest tracks")
    p.add_argument("--library", help="with --like: library directory made by index-library")
    p.add_argument("--name", help="with --like: the playlist's name (default: more like <seed>)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_playlist)


# --------------------------------------------------------------------------- serve (self-contained block)
def cmd_serve(args) -> int:
    """``clapknn serve``: the curator's web app (listen, label, retag at once, export)."""
    from .errors import ParameterError
    from .options import check_int

    try:
        from .webapp import serve
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ParameterError(f"clapknn serve needs the web extra ({exc.name} is missing): pip install 'clapknn[web]'") from None
    check_int("k", args.k)
    check_int("port", args.port, minimum=0)
    if args.port > 65535:
        raise ParameterError(f"port must lie between 0 and 65535, got {args.port}")
    serve(args.index, args.library, host=args.host, port=args.port, k=args.k, cache=_cache(args), workers=args.workers,
          batch_size=args.batch_size, quiet=args.quiet)
    return EXIT_OK


def _add_serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="the curator's web app: listen, confirm or correct tags, every label retags the library at once",
        description="Tag a music folder with an index and open a local web page: a table of tracks with their tags and "
        "scores, players for each track and the snippet that voted, the examples that voted, one-click labels (the "
        "track becomes an example; the library is retagged from its stored vectors), undo, a label-next queue and export.",
    )
    p.add_argument("--index", required=True, help="index directory (or a name under index/)")
    p.add_argument("--library", required=True, help="the music folder (only its audio files and the index's examples are served)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("-k", "--k", type=int, default=opt.DEFAULT_K, help=f"neighbours per snippet (default {opt.DEFAULT_K})")
    p.add_argument("-q", "--quiet", action="store_true", help="no request log")
    p.add_argument("--batch-size", type=int, default=opt.DEFAULT_BATCH_SIZE, help=f"snippets per forward pass (default {opt.DEFAULT_BATCH_SIZE})")
    _add_pipeline(p)
    p.set_defaults(func=cmd_serve)


# --------------------------------------------------------------------------- parser
def _add_encoder_runtime(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder runtime")
    g.add_argument("--checkpoint", help="CLAP checkpoint: an official name or a local .pt path")
    g.add_argument("--device", help="torch device for CLAP (cpu, cuda, cuda:1); default: cuda when present")
    g.add_argument("--threads", type=int, help="CPU threads for the model")
    g.add_argument("--precision", choices=opt.PRECISIONS,
                   help="CLAP arithmetic: fp32 (default), int8 (quantised linear layers, CPU) or bf16; "
                   "part of the index's encoder (docs/scale.md)")
    g.add_argument(
        "--tokenizer", dest="tokenizer_path", metavar="DIR",
        help="folder with the roberta-base tokenizer files, for CLAP text prompts (default: $CLAPKNN_TOKENIZER or the HF cache)",
    )
    g.add_argument("--allow-download", action="store_true", help="download a named CLAP checkpoint once if missing")
    g.add_argument("--batch-size", type=int, default=opt.DEFAULT_BATCH_SIZE, help=f"snippets per forward pass (default {opt.DEFAULT_BATCH_SIZE})")


def _add_pipeline(p: argparse.ArgumentParser, *, workers: bool = True) -> None:
    g = p.add_argument_group("embedding pipeline" if workers else "embedding cache")
    if workers:
        g.add_argument("--workers", type=int, default=0, metavar="N", help="decode in N processes while the model encodes (default 0: a decoding thread)")
    g.add_argument("--cache", metavar="DIR", help="embedding cache (default $CLAPKNN_EMBEDDING_CACHE, else ~/.cache/clapknn/embeddings)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")


def _add_model(p: argparse.ArgumentParser) -> None:
    """The embedding model and the snippets it sees (build, index-library, embed-ray)."""
    p.add_argument("--encoder", choices=opt.ENCODERS, help=f"embedding model (default: {opt.DEFAULT_ENCODER})")
    p.add_argument("--snippet-seconds", type=float, help=f"snippet length in seconds (default {opt.DEFAULT_SNIPPET_SECONDS:g})")
    p.add_argument("--hop-seconds", type=float, help="hop between snippets (default: the snippet length)")


def _cache(args):
    """``cache=`` for the API: off with --no-cache, a folder with --cache, else the default one."""
    if getattr(args, "no_cache", False):
        return False
    return getattr(args, "cache", None) or True


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; the command-line defaults live here."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="clapknn",
        description="Tag music by mood (or any tags) from a few labelled examples: audio embeddings + kNN vote.",
    )
    parser.add_argument("--version", action="version", version=f"clapknn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("build", help="build an index from labelled examples", description="Embed labelled examples and save an index.")
    p.add_argument("examples", help="folder with one sub-folder per tag, or a CSV of path,tags")
    p.add_argument("--labels", help="CSV of path,tags (paths relative to EXAMPLES)")
    p.add_argument("--out", help="index directory to write (default: index/<name of EXAMPLES>)")
    _add_model(p)
    p.add_argument("--prompt", action="append", metavar="TAG=TEXT", help="text anchor for a tag (CLAP only; repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--from-shards", metavar="SHARDS", help="take the vectors from Ray shards (clapknn embed-ray) instead of embedding")
    p.add_argument("--allow-single-tag", action="store_true",
                   help="build even when every example of all tags but one was skipped (refused by default)")
    p.add_argument("--snippets", metavar="N|all",
                   help="at most N snippets per example file, spread over it (default: all)")
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("tag", help="tag audio files or folders with an index", description="Tag audio with an index.")
    p.add_argument("paths", nargs="+", help="audio files and/or folders")
    p.add_argument("--index", required=True, help="index directory (or a name under index/)")
    p.add_argument("-k", "--k", type=int, default=opt.DEFAULT_K, help=f"neighbours per snippet (default {opt.DEFAULT_K})")
    p.add_argument("--weights", default=opt.DEFAULT_WEIGHTS, choices=opt.WEIGHTS, help=f"vote weighting (default {opt.DEFAULT_WEIGHTS})")
    p.add_argument("--aggregate", default=opt.DEFAULT_AGGREGATE, choices=opt.AGGREGATIONS, help=f"snippet→track pooling (default {opt.DEFAULT_AGGREGATE})")
    p.add_argument("--space", default=opt.DEFAULT_SPACE, choices=opt.SPACES,
                   help="the vote's search space: auto (default: the encoder decides on the index's own examples), "
                   "plain vectors, or standardised per dimension on the index")
    p.add_argument("--threshold", type=float, help="minimum score for a tag, 0 to 1 (default 0.5 multi-label, 0 single-label)")
    p.add_argument("--top-n", type=int, help="at most N tags per track, 0 for no limit (default 1 single-label, no limit multi-label)")
    p.add_argument("--hop-seconds", type=float, help="hop between query snippets (default: the index's)")
    p.add_argument("--snippets", metavar="N|all",
                   help=f"at most N snippets per track, spread over it away from intro and outro and read by seeking; "
                   f"'all' for every snippet (default {opt.DEFAULT_TAG_SNIPPETS})")
    p.add_argument("--per-snippet", action="store_true", help="one row per snippet instead of per track")
    p.add_argument("--explain", action="store_true", help="list the nearest examples that voted for each track")
    p.add_argument("--key-tempo", action="store_true", help="add key, mode and BPM columns (no ML)")
    p.add_argument("--out", help="also write the table to .csv, .json or .parquet")
    p.add_argument("--resume", action="store_true", help="append rows to the --out CSV as tracks are tagged; skip paths already in it")
    g = p.add_argument_group("tags in the audio files")
    g.add_argument("--write", action="store_true", help="write each track's tags into its file (ID3 TMOO, Vorbis MOOD, MP4 mood, ...)")
    g.add_argument("--dry-run", action="store_true", help="show what --write would change, write nothing")
    g.add_argument("--replace-tags", action="store_true", help="replace the field's existing values (default: keep them, add the new)")
    g.add_argument("--tag-field", default="mood", metavar="FIELD", help="mood (default), genre, or a custom field name")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (and no table when --out is given)")
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser(
        "analyze", help="key, mode and tempo of audio files (no ML)",
        description="Estimate key (chroma x key profiles) and tempo (onset periodicity) of audio files or folders.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE", help="audio files and/or folders")
    p.add_argument("--profile", default="albrecht", choices=["albrecht", "krumhansl", "temperley"], help="key profiles (default albrecht)")
    p.add_argument("--out", help="also write the table to .csv, .json or .parquet")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (and no table when --out is given)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("info", help="show what is in an index")
    p.add_argument("index", help="index directory (or a name under index/)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "evaluate", help="measure few-shot tagging on labelled examples (splits grouped by source track)",
        description="Few-shot episodes and grouped cross-validation on labelled examples: kNN settings, "
        "baselines and chance levels, as tables, CSV/JSON and PNG plots.",
    )
    p.add_argument("examples", help="folder with one sub-folder per tag, or a CSV of path,tags[,group]")
    p.add_argument("--labels", help="CSV of path,tags[,group] (paths relative to EXAMPLES)")
    p.add_argument("--encoder", default=opt.DEFAULT_ENCODER, choices=opt.ENCODERS, help=f"embedding model (default: {opt.DEFAULT_ENCODER})")
    shots, ks = (",".join(map(str, v)) for v in (opt.EVAL_SHOTS, opt.EVAL_KS))
    p.add_argument("--shots", default=shots, help=f"labelled files per tag in the episodes (default {shots})")
    p.add_argument("--episodes", type=int, default=opt.EVAL_EPISODES, help=f"episodes per shot count (default {opt.EVAL_EPISODES})")
    p.add_argument("--folds", type=int, default=opt.EVAL_FOLDS, help=f"grouped cross-validation folds, 0 for none (default {opt.EVAL_FOLDS})")
    p.add_argument("-k", "--k", default=ks, help=f"neighbour counts to compare (default {ks})")
    p.add_argument("--weights", default=",".join(opt.WEIGHTS), help="vote weightings to compare (default all)")
    p.add_argument("--snippet-seconds", default=f"{opt.DEFAULT_SNIPPET_SECONDS:g}", help=f"snippet lengths to compare, e.g. 3,5,10,30 (default {opt.DEFAULT_SNIPPET_SECONDS:g})")
    p.add_argument("--hop-seconds", type=float, help="hop between snippets (default: the snippet length)")
    p.add_argument("--aggregate", default=opt.DEFAULT_AGGREGATE, choices=opt.AGGREGATIONS, help=f"snippet→track pooling (default {opt.DEFAULT_AGGREGATE})")
    p.add_argument("--snippets", metavar="N|all",
                   help=f"at most N snippets per query track, as clapknn tag reads them (default {opt.DEFAULT_TAG_SNIPPETS}); "
                   "the examples keep every snippet")
    p.add_argument("--space", default=opt.DEFAULT_SPACE, choices=opt.SPACES,
                   help="the vote's search space: auto (default: the encoder decides on the index's own examples), "
                   "plain vectors, or standardised per dimension on the index")
    p.add_argument("--no-baselines", action="store_true", help="skip majority / nearest-centroid / logistic-regression")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes and folds (default 0)")
    p.add_argument("--out", help="folder for summary.csv, runs.csv, per_tag.csv, report.json/.txt and PNG plots")
    p.add_argument("--no-plots", action="store_true", help="no PNG plots in --out")
    p.add_argument("--cache", help="embedding cache folder, so a re-run does not embed again")
    p.add_argument("--workers", "--jobs", dest="workers", type=int, default=0, metavar="N",
                   help="decode in N processes while the encoder runs (default 0: a decoding thread; "
                   "--jobs is the old name of this option)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_encoder_runtime(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "add", help="add labelled examples to an index (no rebuild)",
        description="Embed new examples and add them to an index; a file already in it gets the new vectors and tags.",
    )
    p.add_argument("index", help="index directory (or a name under index/)")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="an example set (folder of tag folders, or CSV of path,tags); with --tag: audio files and/or folders")
    p.add_argument("--tag", action="append", metavar="TAG", help="label every file of SOURCE with TAG (repeatable)")
    p.add_argument("--labels", help="CSV of path,tags (paths relative to SOURCE)")
    p.add_argument("--out", help="write the updated index here instead of over INDEX")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser(
        "remove", help="remove examples (files, folders or tags) from an index",
        description="Remove examples from an index without rebuilding it.",
    )
    p.add_argument("index", help="index directory (or a name under index/)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="indexed files, or folders (every indexed file under them)")
    p.add_argument("--tag", action="append", metavar="TAG", help="take TAG off every example; examples left with no tag are removed (repeatable)")
    p.add_argument("--out", help="write the updated index here instead of over INDEX")
    p.add_argument("-q", "--quiet", action="store_true", help="do not list the removed examples")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser(
        "index-library", help="index a whole library for similarity search (approximate, recall measured)",
        description="Embed every track (one vector per track) and build a FAISS index: exact up to 20,000 tracks, "
        "HNSW up to 250,000, IVF beyond; recall@10 is measured against exact search and stored.",
    )
    p.add_argument("paths", nargs="*", help="audio files and/or folders")
    p.add_argument("--from-shards", metavar="SHARDS", help="take the vectors from Ray shards (clapknn embed-ray) instead of embedding")
    p.add_argument("--out", required=True, help="library directory to write")
    _add_model(p)
    p.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivf"], help="index kind (default: by library size)")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@10 the search depth is tuned to (default 0.95)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_index_library)

    p = sub.add_parser("similar", help="list the library tracks nearest to a file", description="Nearest tracks of a library to FILE.")
    p.add_argument("file", help="an audio file (in the library or not)")
    p.add_argument("--library", required=True, help="library directory made by index-library")
    p.add_argument("-k", "--k", type=int, default=opt.DEFAULT_SIMILAR_K, help=f"tracks to list (default {opt.DEFAULT_SIMILAR_K})")
    p.add_argument("--out", help="also write the table to .csv, .json or .parquet")
    p.add_argument("-q", "--quiet", action="store_true", help="no table when --out is given")
    _add_encoder_runtime(p)
    _add_pipeline(p, workers=False)
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser(
        "embed-ray", help="embed files on a Ray cluster into parquet shards",
        description="Encoder actors (GPU when the cluster has one) run the embedding engine on batches of files; "
        "the vectors are written as parquet shards for build/index-library --from-shards.",
    )
    p.add_argument("paths", nargs="+", help="audio files and/or folders (at the same paths on every node)")
    p.add_argument("--out", required=True, help="shard directory to write (shared by every node)")
    p.add_argument("--address", help="Ray cluster address ('auto' on a cluster node; default: a local Ray)")
    _add_model(p)
    p.add_argument("--num-encoders", type=int, help="encoder actors (default: one per GPU, else one per 2 CPUs)")
    p.add_argument("--gpus-per-encoder", type=float, help="GPUs per encoder actor (default 1 when the cluster has GPUs)")
    p.add_argument("--files-per-task", type=int, default=4, metavar="N",
                   help="files an encoder actor is given at a time, run again when its node is lost (default 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_encoder_runtime(p)
    _add_pipeline(p, workers=False)
    p.set_defaults(func=cmd_embed_ray)

    p = sub.add_parser("cache", help="show (or clear) the embedding cache")
    p.add_argument("--dir", help="cache folder (default $CLAPKNN_EMBEDDING_CACHE, else ~/.cache/clapknn/embeddings)")
    p.add_argument("--clear", action="store_true", help="delete every cached embedding and the hash memo")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("demo", help="build from a few bundled mood clips, tag the rest, print accuracy")
    p.add_argument("--per-tag", type=int, default=2, help="examples per mood used to build (default 2)")
    p.add_argument("--out", help="also write the tags table (.csv/.json/.parquet)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the accuracy line (no progress bar, no table)")
    p.set_defaults(func=cmd_demo)
    _add_playlist_parser(sub)
    _add_serve_parser(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """A log handler that writes to ``sys.stderr`` as it is at each line (redirected or captured)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging(verbose: bool) -> None:
    """``-v``: clapknn's own INFO lines on stderr; other libraries' loggers (faiss, ...) are left alone."""
    log = logging.getLogger("clapknn")
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("clapknn: %(message)s"))
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    from .errors import ClapknnError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    _configure_logging(args.verbose)
    try:
        return args.func(args)
    except ClapknnError as exc:
        print(f"clapknn: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("clapknn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BrokenPipeError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            return EXIT_OK
        print(f"clapknn: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
