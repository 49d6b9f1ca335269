"""The commands of libraries, clusters, the cache and the web app: ``index-library``, ``similar``,
``embed-ray``, ``cache``, ``demo``, ``playlist``, ``serve``. Each reads its arguments, calls the
API and reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import options as opt
from .common import (
    EXIT_OK, EXIT_SKIPPED, cache_option, check_out, encoder_options, print_skipped, refuse_with_shards, snippet_seconds,
)


def cmd_index_library(args) -> int:
    """``clapknn index-library``: embed a music library for similarity search."""
    from ..errors import ParameterError
    from ..library import index_library

    if bool(args.paths) == bool(args.from_shards):
        raise ParameterError("give audio files/folders, or --from-shards SHARDS (not both)")
    if args.from_shards:
        from ..embedding.shards import library_from_shards

        refuse_with_shards(args, ("--encoder", "encoder"), ("--snippet-seconds", "snippet_seconds"),
                           ("--hop-seconds", "hop_seconds"), ("--checkpoint", "checkpoint"))
        lib = library_from_shards(args.from_shards, args.out, kind=args.kind, target_recall=args.target_recall)
    else:
        lib = index_library(
            args.paths, args.out, encoder=args.encoder or opt.DEFAULT_ENCODER, encoder_options=encoder_options(args),
            snippet_seconds=snippet_seconds(args), hop_seconds=args.hop_seconds, kind=args.kind,
            target_recall=args.target_recall, batch_size=args.batch_size, cache=cache_option(args), workers=args.workers,
            progress=not args.quiet,
        )
    m = lib.manifest
    params = ", ".join(f"{k} {v}" for k, v in m["params"].items())
    measured = f"recall@10 {m['recall_at_10']:.3f} against exact search on {m['recall_queries']} tracks" if m["recall_queries"] else "exact search"
    print(f"indexed {len(lib)} track(s) into {args.out}: {m['kind']}" + (f" ({params})" if params else "") + f", {measured}")
    print_skipped(lib.skipped, args.quiet)
    return EXIT_SKIPPED if lib.skipped else EXIT_OK


def cmd_similar(args) -> int:
    """``clapknn similar``: the library tracks nearest to a file."""
    from ..library import similar
    from ..output import format_table, write_table

    check_out(args)
    table = similar(args.library, args.file, k=args.k, encoder_options=encoder_options(args), cache=cache_option(args))
    if args.out:
        write_table(table, args.out)
        print(f"wrote {len(table)} row(s) to {args.out}", file=sys.stderr)
    if not args.out or not args.quiet:
        print(format_table(table, columns=["rank", "similarity", "path"], float_digits=3) if len(table) else "(no neighbour)")
    return EXIT_OK


def cmd_embed_ray(args) -> int:
    """``clapknn embed-ray``: the embedding stage on a Ray cluster, written as parquet shards."""
    from ..embedding.ray import embed_with_ray
    from ..embedding.shards import shards_manifest

    out = embed_with_ray(
        args.paths, args.out, encoder=args.encoder or opt.DEFAULT_ENCODER, encoder_options=encoder_options(args),
        snippet_seconds=snippet_seconds(args), hop_seconds=args.hop_seconds, batch_size=args.batch_size,
        num_encoders=args.num_encoders, gpus_per_encoder=args.gpus_per_encoder, files_per_task=args.files_per_task,
        address=args.address,
        progress=not args.quiet, cache=cache_option(args),
    )
    m = shards_manifest(out)  # the counts are in the manifest: the shards are not read again
    skipped = [tuple(p) for p in m["skipped_inputs"] + m["failures"]]
    print(f"wrote {m['n_vectors']} vectors of {m['n_files'] - len(m['failures'])} file(s) to {out}")
    print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_cache(args) -> int:
    """``clapknn cache``: what the embedding cache holds; ``--clear`` empties it."""
    from ..embedding.cache import EmbeddingCache, default_cache_dir

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
    from ..demo import run_demo

    return run_demo(per_tag=args.per_tag, out=args.out, quiet=args.quiet)


def cmd_playlist(args) -> int:
    """``clapknn playlist``: .m3u8 playlists per tag (from a tag table, or an index and music), or "more like these"."""
    from ..errors import ParameterError
    from ..players.playlist import DEFAULT_SIMILAR_TRACKS, check_limits, describe, read_tag_table, similar_playlist, tag_playlists

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
            min_similarity=args.min_score, relative=relative, relative_to=args.relative_to, name=args.name, cache=cache_option(args),
        )]
        skipped = list(playlists[0].skipped)
    else:
        if args.library:
            raise ParameterError("--library is for --like SEED playlists")
        if not args.sources:
            raise ParameterError("give a tag table (clapknn tag --out), or music files/folders with --index")
        skipped = []
        if args.index:
            from ..tagging.tagger import Tagger

            tagger = Tagger(args.index, k=args.k, threshold=args.threshold, encoder_options=encoder_options(args))
            result = tagger.tag(args.sources, progress=not args.quiet, cache=cache_option(args), workers=args.workers)
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
    print_skipped(skipped, args.quiet)
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_serve(args) -> int:
    """``clapknn serve``: the curator's web app (listen, label, retag at once, export)."""
    from ..errors import ParameterError
    from ..options import check_int

    try:
        from ..webapp import serve
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ParameterError(f"clapknn serve needs the web extra ({exc.name} is missing): pip install 'clapknn[web]'") from None
    check_int("k", args.k, allow_none=True)  # None: the tagger's own default
    check_int("port", args.port, minimum=0)
    if args.port > 65535:
        raise ParameterError(f"port must lie between 0 and 65535, got {args.port}")
    serve(args.index, args.library, host=args.host, port=args.port, k=args.k, cache=cache_option(args), workers=args.workers,
          batch_size=args.batch_size, quiet=args.quiet)
    return EXIT_OK
