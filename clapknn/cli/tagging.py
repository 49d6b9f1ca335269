"""The commands of examples, indexes and tags: ``build``, ``tag``, ``analyze``, ``info``,
``evaluate``, ``add``, ``remove``. Each reads its arguments, calls the API and reports."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import options as opt
from .common import (
    EXIT_OK, EXIT_SKIPPED, cache_option, check_out, csv_list, encoder_options, max_snippets, parse_prompts, print_skipped,
    refuse_with_shards, snippet_seconds,
)


def cmd_build(args) -> int:
    """``clapknn build``: embed labelled examples and save an index."""
    from ..tagging.tagger import INDEX_HOME
    from ..tagging.build import build_index

    out = Path(args.out) if args.out else INDEX_HOME / Path(args.examples).resolve().stem
    options = encoder_options(args)
    if args.from_shards:
        from ..embedding.shards import index_from_shards

        refuse_with_shards(args, ("--encoder", "encoder"), ("--snippet-seconds", "snippet_seconds"),
                           ("--hop-seconds", "hop_seconds"), ("--prompt", "prompt"), ("--checkpoint", "checkpoint"))
        index = index_from_shards(args.from_shards, args.examples, out, labels=args.labels)
    else:
        index = build_index(
            args.examples, out, labels=args.labels, encoder=args.encoder or opt.DEFAULT_ENCODER, encoder_options=options,
            snippet_seconds=snippet_seconds(args), hop_seconds=args.hop_seconds, prompts=parse_prompts(args.prompt),
            batch_size=args.batch_size, progress=not args.quiet, cache=cache_option(args), workers=args.workers,
            allow_single_tag=args.allow_single_tag, max_snippets=max_snippets(args, opt.DEFAULT_BUILD_SNIPPETS),
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
    print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def _check_resume(args) -> None:
    from ..errors import ParameterError

    if not args.out or Path(args.out).suffix.lower() != ".csv":
        raise ParameterError("--resume needs --out RESULTS.csv (rows are appended as tracks are tagged)")
    clash = [o for o, on in (("--per-snippet", args.per_snippet), ("--explain", args.explain), ("--key-tempo", args.key_tempo),
                              ("--write", args.write), ("--dry-run", args.dry_run)) if on]
    if clash:
        raise ParameterError(f"--resume writes the per-track table only; it cannot be combined with {', '.join(clash)}")


def _tag_resumable(tagger, args) -> int:
    """``tag --resume``: stream rows into a CSV, skipping paths already there."""
    from ..tagging.resume import tag_to_csv

    report = tag_to_csv(tagger, args.paths, args.out, resume=True, cache=cache_option(args), workers=args.workers, progress=not args.quiet)
    already = f", {report.n_already} already in {args.out}" if report.n_already else ""
    print(f"tagged {report.n_tagged} of {report.n_files} track(s){already}; rows in {args.out}", file=sys.stderr)
    print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_tag(args) -> int:
    """``clapknn tag``: tag files and folders; optionally explain the votes and write the tags into the files."""
    from ..embedding.workers import start_for_index

    start_for_index(args.index, args.workers)  # the workers' imports run beside this process's own
    from ..output import format_table, write_table
    from ..tagging.tagger import Tagger

    if args.write or args.dry_run:
        from ..players.tags import check_field

        check_field(args.tag_field)  # fail before the tagging work, not after
    if args.resume:
        _check_resume(args)
    check_out(args)
    tagger = Tagger(
        args.index, k=args.k, weights=args.weights, aggregate=args.aggregate, threshold=args.threshold,
        top_n=args.top_n, hop_seconds=args.hop_seconds, batch_size=args.batch_size,
        encoder_options=encoder_options(args), space=args.space, max_snippets=max_snippets(args, opt.DEFAULT_TAG_SNIPPETS),
    )
    for note in tagger.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.resume:
        return _tag_resumable(tagger, args)
    result = tagger.tag(args.paths, progress=not args.quiet, explain=args.explain, cache=cache_option(args), workers=args.workers,
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
    print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _write_file_tags(tracks, args) -> list[tuple[str, str]]:
    """``tag --write``/``--dry-run``: put each track's tags into its file; returns the files not written."""
    from ..players.tags import write_track_tags

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
    from ..analysis import analyze_files
    from ..errors import ClapknnError
    from ..labels import collect_audio
    from ..output import format_table, write_table

    check_out(args)
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
    print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_info(args) -> int:
    """``clapknn info``: what an index holds (encoder, snippet length, vectors, tags)."""
    import json

    from ..tagging.tagger import load_index, vote_summary

    index = load_index(args.index)
    s = index.summary()
    vote = vote_summary(index)
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


def cmd_evaluate(args) -> int:
    """``clapknn evaluate``: few-shot episodes and grouped folds on labelled examples, with baselines."""
    from ..errors import ParameterError
    from ..evaluation import evaluate

    if args.predictions and not args.out:
        raise ParameterError("--predictions writes predictions.csv into the --out folder: give --out DIR")
    report = evaluate(
        args.examples, labels=args.labels, encoder=args.encoder, encoder_options=encoder_options(args),
        shots=csv_list(args.shots, int, "--shots"), n_episodes=args.episodes, folds=args.folds,
        k=csv_list(args.k, int, "-k"), weights=csv_list(args.weights, str, "--weights"),
        snippet_seconds=csv_list(args.snippet_seconds, float, "--snippet-seconds"), hop_seconds=args.hop_seconds,
        aggregate=args.aggregate, space=args.space, baselines=not args.no_baselines, seed=args.seed, out_dir=args.out,
        plots=not args.no_plots, workers=args.workers, cache=args.cache, batch_size=args.batch_size,
        progress=not args.quiet, max_snippets=max_snippets(args, opt.DEFAULT_TAG_SNIPPETS),
        predictions=args.predictions,
    )
    print(report.text())
    if args.out:
        written = list(report.files.values()) + list(report.plots.values())
        print(f"wrote {len(written)} file(s) to {args.out}", file=sys.stderr)
    print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_add(args) -> int:
    """``clapknn add``: add labelled examples to an index without rebuilding it."""
    from ..incremental import add_examples

    index, report = add_examples(
        args.index, args.sources, tags=args.tag, labels=args.labels, out=args.out,
        encoder_options=encoder_options(args), batch_size=args.batch_size, cache=cache_option(args),
        workers=args.workers, progress=not args.quiet,
    )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    replaced = f", {len(report.replaced)} of them already indexed (replaced)" if report.replaced else ""
    print(
        f"added {len(report.added)} file(s){replaced} to {args.out or args.index}: "
        f"{report.n_vectors_before} -> {report.n_vectors_after} vectors; tags: {', '.join(index.tags)}"
    )
    print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_remove(args) -> int:
    """``clapknn remove``: remove example files, folders or whole tags from an index."""
    from ..incremental import remove_examples

    index, report = remove_examples(args.index, args.paths, tags=args.tag or (), out=args.out)
    untagged = f"; took tag(s) off {len(report.untagged)} example(s)" if report.untagged else ""
    print(
        f"removed {len(report.removed)} example(s){untagged} from {args.out or args.index}: "
        f"{report.n_vectors_before} -> {report.n_vectors_after} vectors; tags: {', '.join(index.tags)}"
    )
    if not args.quiet:
        for path in report.removed:
            print(f"  - {path}")
    print_skipped(report.skipped, args.quiet)
    return EXIT_SKIPPED if report.skipped else EXIT_OK
