"""The command line's parser, built from the API's settings (:mod:`clapknn.options`): every default
and choice shown here is the one the API itself uses, so the two cannot drift apart
(``tests/test_cli.py`` checks them against the API's signatures). Building it imports no heavy
library."""

from __future__ import annotations

import argparse

from .. import options as opt
from .library import cmd_cache, cmd_demo, cmd_embed_ray, cmd_index_library, cmd_playlist, cmd_serve, cmd_similar
from .tagging import cmd_add, cmd_analyze, cmd_build, cmd_evaluate, cmd_info, cmd_remove, cmd_tag

__all__ = ["build_parser"]

_PLAYLIST_DESCRIPTION = (
    "One extended-M3U playlist per tag, best score first, from a tag table (clapknn tag --out) or from music tagged "
    "with --index; or, with --like, the library tracks nearest a few seed tracks. Media servers (Navidrome, "
    "Jellyfin, MPD) import .m3u8 files from the music folder."
)
_SERVE_DESCRIPTION = (
    "Tag a music folder with an index and open a local web page: a table of tracks with their tags and scores, "
    "players for each track and the snippet that voted, the examples that voted, one-click labels (the track becomes "
    "an example; the library is retagged from its stored vectors), undo, a label-next queue and export."
)


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
        _add_workers(g)
    g.add_argument("--cache", metavar="DIR", help="embedding cache (default $CLAPKNN_EMBEDDING_CACHE, else ~/.cache/clapknn/embeddings)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")


def _workers(text: str):
    """``--workers N|auto`` (:func:`clapknn.options.parse_workers`)."""
    try:
        return opt.parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_workers(g) -> None:
    g.add_argument("--workers", type=_workers, default=opt.DEFAULT_CLI_WORKERS, metavar="N|auto",
                   help="worker processes: the features encoder decodes and encodes in them, CLAP only decodes there; "
                   f"0 decodes in a thread (default {opt.DEFAULT_CLI_WORKERS}: one per core for features, 0 for CLAP)")


def _add_k(p, what: str = "neighbours per snippet", default=opt.DEFAULT_K) -> None:
    p.add_argument("-k", "--k", type=int, default=default, help=f"{what} (default {opt.DEFAULT_K if default is None else default})")


def _add_index(p) -> None:
    """The index a command reads (positional)."""
    p.add_argument("index", help="index directory (or a name under index/)")


def _add_table_out(p) -> None:
    p.add_argument("--out", help="also write the table to .csv, .json or .parquet")


def _add_quiet(p, help: str = "no progress bar") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=help)


def _add_vote(p, *, single: bool) -> None:
    """The vote's pooling and search space (as ``tag`` uses them; ``evaluate`` compares the rest)."""
    p.add_argument("--aggregate", default=opt.DEFAULT_AGGREGATE, choices=opt.AGGREGATIONS,
                   help=f"snippet→track pooling (default {opt.DEFAULT_AGGREGATE})")
    p.add_argument("--space", default=opt.DEFAULT_SPACE, choices=opt.SPACES,
                   help=f"the vote's search space: {opt.DEFAULT_SPACE} (default: the encoder decides on the index's own "
                   "examples), plain vectors, or standardised per dimension on the index")
    if single:
        p.add_argument("--weights", default=opt.DEFAULT_WEIGHTS, choices=opt.WEIGHTS,
                       help=f"vote weighting (default {opt.DEFAULT_WEIGHTS})")


def _add_model(p: argparse.ArgumentParser) -> None:
    """The embedding model and the snippets it sees (build, index-library, embed-ray)."""
    p.add_argument("--encoder", choices=opt.ENCODERS, help=f"embedding model (default: {opt.DEFAULT_ENCODER})")
    p.add_argument("--snippet-seconds", type=float, help=f"snippet length in seconds (default {opt.DEFAULT_SNIPPET_SECONDS:g})")
    p.add_argument("--hop-seconds", type=float, help="hop between snippets (default: the snippet length)")


def _index_edit_parser(sub, name: str, *, help: str, description: str, items: tuple, tag_help: str, quiet_help: str, func):
    """``add`` and ``remove``: an index changed in place (or written to ``--out``), the files named, ``--tag``."""
    p = sub.add_parser(name, help=help, description=description)
    _add_index(p)
    dest, nargs, metavar, items_help = items
    p.add_argument(dest, nargs=nargs, metavar=metavar, help=items_help)
    p.add_argument("--tag", action="append", metavar="TAG", help=tag_help)
    p.add_argument("--out", help="write the updated index here instead of over INDEX")
    _add_quiet(p, quiet_help)
    p.set_defaults(func=func)
    return p


def _add_from_shards(p) -> None:
    p.add_argument("--from-shards", metavar="SHARDS", help="take the vectors from Ray shards (clapknn embed-ray) instead of embedding")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; its defaults and choices are the API's (:mod:`clapknn.options`)."""
    from .. import __version__

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
    _add_quiet(p)
    _add_from_shards(p)
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
    _add_k(p)
    _add_vote(p, single=True)
    p.add_argument("--threshold", type=float,
                   help=f"minimum score for a tag, 0 to 1 (default {opt.DEFAULT_MULTILABEL_THRESHOLD:g} multi-label, 0 single-label)")
    p.add_argument("--top-n", type=int, help="at most N tags per track, 0 for no limit (default 1 single-label, no limit multi-label)")
    p.add_argument("--hop-seconds", type=float, help="hop between query snippets (default: the index's)")
    p.add_argument("--snippets", metavar="N|all",
                   help=f"at most N snippets per track, spread over it away from intro and outro and read by seeking; "
                   f"'all' for every snippet (default {opt.DEFAULT_TAG_SNIPPETS})")
    p.add_argument("--per-snippet", action="store_true", help="one row per snippet instead of per track")
    p.add_argument("--explain", action="store_true", help="list the nearest examples that voted for each track")
    p.add_argument("--key-tempo", action="store_true", help="add key, mode and BPM columns (no ML)")
    _add_table_out(p)
    p.add_argument("--resume", action="store_true", help="append rows to the --out CSV as tracks are tagged; skip paths already in it")
    g = p.add_argument_group("tags in the audio files")
    g.add_argument("--write", action="store_true", help="write each track's tags into its file (ID3 TMOO, Vorbis MOOD, MP4 mood, ...)")
    g.add_argument("--dry-run", action="store_true", help="show what --write would change, write nothing")
    g.add_argument("--replace-tags", action="store_true", help="replace the field's existing values (default: keep them, add the new)")
    g.add_argument("--tag-field", default=opt.DEFAULT_TAG_FIELD, metavar="FIELD",
                   help=f"mood, genre, or a custom field name (default {opt.DEFAULT_TAG_FIELD})")
    _add_quiet(p, "no progress bar (and no table when --out is given)")
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser(
        "analyze", help="key, mode and tempo of audio files (no ML)",
        description="Estimate key (chroma x key profiles) and tempo (onset periodicity) of audio files or folders.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE", help="audio files and/or folders")
    p.add_argument("--profile", default=opt.DEFAULT_KEY_PROFILE, choices=opt.KEY_PROFILES,
                   help=f"key profiles (default {opt.DEFAULT_KEY_PROFILE})")
    _add_table_out(p)
    _add_quiet(p, "no progress bar (and no table when --out is given)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("info", help="show what is in an index")
    _add_index(p)
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
    _add_vote(p, single=False)
    p.add_argument("--snippets", metavar="N|all",
                   help=f"at most N snippets per query track, as clapknn tag reads them (default {opt.DEFAULT_TAG_SNIPPETS}); "
                   "the examples keep every snippet")
    p.add_argument("--no-baselines", action="store_true", help="skip majority / nearest-centroid / logistic-regression")
    p.add_argument("--seed", type=int, default=opt.DEFAULT_SEED, help=f"seed of the episodes and folds (default {opt.DEFAULT_SEED})")
    p.add_argument("--out", help="folder for summary.csv, runs.csv, per_tag.csv, report.json/.txt and PNG plots")
    p.add_argument("--no-plots", action="store_true", help="no PNG plots in --out")
    p.add_argument("--predictions", action="store_true",
                   help="also write predictions.csv in --out: every query track's predicted tags, per setting and episode/fold")
    p.add_argument("--cache", help="embedding cache folder, so a re-run does not embed again")
    p.add_argument("--workers", "--jobs", dest="workers", type=int, default=opt.DEFAULT_WORKERS, metavar="N",
                   help=f"decode in N processes while the encoder runs (default {opt.DEFAULT_WORKERS}: a decoding thread; "
                   "--jobs is the old name of this option)")
    _add_quiet(p)
    _add_encoder_runtime(p)
    p.set_defaults(func=cmd_evaluate)

    p = _index_edit_parser(
        sub, "add", help="add labelled examples to an index (no rebuild)",
        description="Embed new examples and add them to an index; a file already in it gets the new vectors and tags.",
        items=("sources", "+", "SOURCE", "an example set (folder of tag folders, or CSV of path,tags); with --tag: audio files and/or folders"),
        tag_help="label every file of SOURCE with TAG (repeatable)", quiet_help="no progress bar", func=cmd_add,
    )
    p.add_argument("--labels", help="CSV of path,tags (paths relative to SOURCE)")
    _add_encoder_runtime(p)
    _add_pipeline(p)
    _index_edit_parser(
        sub, "remove", help="remove examples (files, folders or tags) from an index",
        description="Remove examples from an index without rebuilding it.",
        items=("paths", "*", "PATH", "indexed files, or folders (every indexed file under them)"),
        tag_help="take TAG off every example; examples left with no tag are removed (repeatable)",
        quiet_help="do not list the removed examples", func=cmd_remove,
    )

    p = sub.add_parser(
        "index-library", help="index a whole library for similarity search (approximate, recall measured)",
        description="Embed every track (one vector per track) and build a FAISS index: exact up to 20,000 tracks, "
        "HNSW up to 250,000, IVF beyond; recall@10 is measured against exact search and stored.",
    )
    p.add_argument("paths", nargs="*", help="audio files and/or folders")
    _add_from_shards(p)
    p.add_argument("--out", required=True, help="library directory to write")
    _add_model(p)
    p.add_argument("--kind", default=opt.DEFAULT_LIBRARY_KIND, choices=opt.LIBRARY_KINDS,
                   help=f"index kind (default {opt.DEFAULT_LIBRARY_KIND}: by library size)")
    p.add_argument("--target-recall", type=float, default=opt.DEFAULT_TARGET_RECALL,
                   help=f"recall@10 the search depth is tuned to (default {opt.DEFAULT_TARGET_RECALL:g})")
    _add_quiet(p)
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_index_library)

    p = sub.add_parser("similar", help="list the library tracks nearest to a file", description="Nearest tracks of a library to FILE.")
    p.add_argument("file", help="an audio file (in the library or not)")
    p.add_argument("--library", required=True, help="library directory made by index-library")
    _add_k(p, "tracks to list", opt.DEFAULT_SIMILAR_K)
    _add_table_out(p)
    _add_quiet(p, "no table when --out is given")
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
    p.add_argument("--files-per-task", type=int, default=opt.DEFAULT_FILES_PER_TASK, metavar="N",
                   help=f"files an encoder actor is given at a time, run again when its node is lost (default {opt.DEFAULT_FILES_PER_TASK})")
    _add_quiet(p, "no progress output")
    _add_encoder_runtime(p)
    _add_pipeline(p, workers=False)
    p.set_defaults(func=cmd_embed_ray)

    p = sub.add_parser("cache", help="show (or clear) the embedding cache")
    p.add_argument("--dir", help="cache folder (default $CLAPKNN_EMBEDDING_CACHE, else ~/.cache/clapknn/embeddings)")
    p.add_argument("--clear", action="store_true", help="delete every cached embedding and the hash memo")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("demo", help="build from a few bundled mood clips, tag the rest, print accuracy")
    p.add_argument("--per-tag", type=int, default=opt.DEMO_PER_TAG, help=f"examples per mood used to build (default {opt.DEMO_PER_TAG})")
    p.add_argument("--out", help="also write the tags table (.csv/.json/.parquet)")
    _add_quiet(p, "print only the accuracy line (no progress bar, no table)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("playlist", help="write .m3u8 playlists: one per tag, or tracks like a few seeds",
                       description=_PLAYLIST_DESCRIPTION)
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="a tag table (.csv/.json/.parquet), or with --index audio files/folders")
    p.add_argument("--out-dir", default=".", metavar="DIR", help="folder for the playlists (default: here)")
    p.add_argument("--index", help="tag SOURCE with this index first (default: SOURCE is a tag table)")
    _add_k(p, "with --index: neighbours per snippet")
    p.add_argument("--threshold", type=float, help="with --index: minimum score for a tag, 0 to 1")
    p.add_argument("--tags", metavar="A,B", help="only these tags (default: every tag)")
    p.add_argument("--min-score", type=float, help="leave out tracks scoring below this (tag score, or similarity with --like)")
    p.add_argument("--max-tracks", type=int, metavar="N",
                   help=f"at most N tracks per playlist (default: all; {opt.DEFAULT_SIMILAR_TRACKS} with --like)")
    p.add_argument("--absolute", action="store_true", help="absolute paths (default: relative to the playlist's folder)")
    p.add_argument("--relative-to", metavar="DIR", help="paths relative to DIR instead (e.g. MPD's music_directory)")
    p.add_argument("--prefix", default="", help="put before each tag in the playlist names, e.g. 'mood - '")
    p.add_argument("--like", action="append", metavar="SEED", help="a seed track of the library (repeatable): write one playlist of its nearest tracks")
    p.add_argument("--library", help="with --like: library directory made by index-library")
    p.add_argument("--name", help="with --like: the playlist's name (default: more like <seed>)")
    _add_quiet(p)
    _add_encoder_runtime(p)
    _add_pipeline(p)
    p.set_defaults(func=cmd_playlist)

    p = sub.add_parser("serve", help="the curator's web app: listen, confirm or correct tags, every label retags the library at once",
                       description=_SERVE_DESCRIPTION)
    p.add_argument("--index", required=True, help="index directory (or a name under index/)")
    p.add_argument("--library", required=True, help="the music folder (only its audio files and the index's examples are served)")
    p.add_argument("--host", default=opt.DEFAULT_HOST, help=f"address to listen on (default {opt.DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=opt.DEFAULT_PORT, help=f"port (default {opt.DEFAULT_PORT})")
    _add_k(p, default=None)
    _add_quiet(p, "no request log")
    p.add_argument("--batch-size", type=int, default=opt.DEFAULT_BATCH_SIZE, help=f"snippets per forward pass (default {opt.DEFAULT_BATCH_SIZE})")
    _add_pipeline(p)
    p.set_defaults(func=cmd_serve)
    return parser
