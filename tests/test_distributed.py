"""The embedding stage on Ray Data, on a local Ray cluster started here; indexes built from its shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")  # in the dev extra: CI runs this

from clapknn import Tagger, build_index  # noqa: E402
from clapknn.distributed import embed_with_ray, index_from_shards, library_from_shards, read_shards  # noqa: E402
from clapknn.encode import embed_files  # noqa: E402
from clapknn.encoders import get_encoder  # noqa: E402
from clapknn.errors import IndexFormatError, ParameterError  # noqa: E402
from clapknn.library import similar  # noqa: E402

from conftest import STYLES, make_examples, tone, write_audio  # noqa: E402

SNIP = 2.0


@pytest.fixture(scope="module")
def cluster():
    """A local two-CPU Ray cluster for this module (decode tasks and one encoder actor)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    examples = make_examples(root / "examples", per_tag=2, seconds=4.0)
    (examples / "calm" / "broken.wav").write_bytes(b"RIFF....WAVEnope")
    write_audio(examples / "energetic" / "quiet.wav", np.zeros(22050 * 3, np.float32))
    nan = tone(220.0, 2.0)
    nan[10] = np.nan
    write_audio(examples / "calm" / "nan.wav", nan, subtype="FLOAT")  # the one sample check, as in embed_files
    write_audio(examples / "energetic" / "with_tail.wav", tone(700.0, 5.2, seed=4, pulse_bpm=150.0))  # 0, 2, 3.2 s
    out = embed_with_ray(examples, root / "shards", snippet_seconds=SNIP, batch_size=3)
    return examples, out


def test_shards_hold_what_embed_files_gives(shards):
    examples, out = shards
    assert (out / "shards.json").is_file() and list(out.glob("*.parquet"))
    got = read_shards(out)
    files, _ = Tagger.collect_files(examples)
    want = embed_files(files, get_encoder("features"), snippet_seconds=SNIP)
    # Ray workers run BLAS with one thread: the same vectors up to float rounding
    np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-6)
    pd.testing.assert_frame_equal(got.snippets, want.snippets, check_dtype=False)
    pd.testing.assert_frame_equal(got.files, want.files, check_dtype=False)
    reasons = dict(got.failures)
    assert "cannot decode" in reasons[str(examples / "calm" / "broken.wav")]
    assert reasons[str(examples / "energetic" / "quiet.wav")].startswith("silent")
    assert reasons[str(examples / "calm" / "nan.wav")] == "audio contains NaN or infinite samples"
    tail = got.snippets[got.snippets["path"] == str(examples / "energetic" / "with_tail.wav")]
    np.testing.assert_allclose(tail["start"], [0.0, 2.0, 3.2])


def test_index_and_library_from_shards(shards, tmp_path):
    examples, out = shards
    index = index_from_shards(out, examples, tmp_path / "idx")
    reference = build_index(examples, snippet_seconds=SNIP)
    np.testing.assert_allclose(index.vectors, reference.vectors, atol=1e-6)
    pd.testing.assert_frame_equal(index.metadata, reference.metadata, check_dtype=False)
    query = write_audio(tmp_path / "q.wav", tone(STYLES["energetic"]["freq"] * 1.01, 4.0, seed=5, pulse_bpm=150.0))
    assert Tagger(tmp_path / "idx").tag(query).tracks["top"].iat[0] == "energetic"
    assert len(index.report.skipped) == 3

    lib = library_from_shards(out, tmp_path / "lib")
    assert len(lib) == 5 and lib.kind == "flat"
    table = similar(tmp_path / "lib", examples / "calm" / "calm_0.wav", k=1, cache=False)
    assert Path(table["path"].iat[0]).name == "calm_1.wav"


def test_shard_directory_checks(shards, tmp_path):
    _, out = shards
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match="refusing"):
        embed_with_ray([tmp_path], other)
    with pytest.raises(IndexFormatError):
        read_shards(other)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "shards.json").write_text((out / "shards.json").read_text())
    with pytest.raises(IndexFormatError, match="incomplete"):
        read_shards(partial)


def test_cli_embed_ray_then_build_and_index_library(shards, tmp_path, capsys):
    from clapknn.cli import main

    examples, _ = shards
    out = tmp_path / "cli-shards"
    rc = main(["embed-ray", str(examples), "--out", str(out), "--snippet-seconds", "2", "-q"])
    captured = capsys.readouterr()
    assert rc == 1 and "wrote 11 vectors of 5 file(s)" in captured.out and "broken.wav" in captured.err
    rc = main(["build", str(examples), "--from-shards", str(out), "--out", str(tmp_path / "idx"), "-q"])
    assert rc == 1 and "built" in capsys.readouterr().out  # the two unusable examples are listed
    assert len(Tagger(tmp_path / "idx").index) == 11
    rc = main(["index-library", "--from-shards", str(out), "--out", str(tmp_path / "lib"), "-q"])
    assert rc == 1 and "indexed 5 track(s)" in capsys.readouterr().out
    assert main(["index-library", str(examples), "--from-shards", str(out), "--out", str(tmp_path / "x")]) == 2


def test_tag_shards_equals_tag(shards, tmp_path):
    from clapknn.distributed import tag_shards

    examples, out = shards
    index = build_index(examples, snippet_seconds=SNIP)
    got = tag_shards(Tagger(index), out)
    want = Tagger(index).tag(examples)
    pd.testing.assert_frame_equal(got.tracks.drop(columns=[c for c in got.tracks if c.startswith("score")]),
                                  want.tracks.drop(columns=[c for c in want.tracks if c.startswith("score")]))
    np.testing.assert_allclose(got.tracks["score"], want.tracks["score"], atol=1e-5)
    assert sorted(p for p, _ in got.skipped) == sorted(p for p, _ in want.skipped)
    other = build_index(examples, snippet_seconds=1.0)
    from clapknn.errors import EncoderMismatchError

    with pytest.raises(EncoderMismatchError):
        tag_shards(Tagger(other), out)


def test_worker_with_another_encoder_is_refused():
    from clapknn.distributed import _EncodeActor
    from clapknn.errors import EncoderMismatchError

    identity = get_encoder("features").identity()
    _EncodeActor("features", {}, identity)  # the same encoder: accepted
    with pytest.raises(EncoderMismatchError, match="Ray worker"):
        _EncodeActor("features", {}, {**identity, "recipe": -1})


def test_ray_pipeline_reads_and_fills_the_embedding_cache(shards, tmp_path):
    """A first run stores every fresh file (silent ones too, not undecodable ones); a second run's
    decode tasks take them from the cache instead of decoding, and the shards come out the same;
    the cache is shared with the in-process pipeline both ways."""
    from clapknn.cache import EmbeddingCache, settings_key
    from clapknn.distributed import _decode_file

    examples, _ = shards
    cache = tmp_path / "cache"
    first = embed_with_ray(examples, tmp_path / "a", snippet_seconds=SNIP, batch_size=3, cache=cache)
    assert EmbeddingCache(cache).stats()["entries"] == 6  # 5 usable files and the silent one
    identity = get_encoder("features").identity()
    key = settings_key(identity, SNIP, SNIP)
    files, _ = Tagger.collect_files(examples)
    kinds = {Path(p).name: {r["kind"] for r in _decode_file({"file": 0, "path": str(p)}, sample_rate=22050, length=SNIP,
                                                          hop=SNIP, cache=str(cache), key=key, dim=identity["dim"])}
             for p in files}
    assert kinds["broken.wav"] == {"file"}  # not cached: decoded (and failing) again
    assert kinds["quiet.wav"] == {"file"}  # silent: no vectors, but found
    assert kinds["nan.wav"] == {"file"}  # refused samples: not cached either
    assert all(k == {"cached", "file"} for name, k in kinds.items() if name not in ("broken.wav", "quiet.wav", "nan.wav"))
    second = embed_with_ray(examples, tmp_path / "b", snippet_seconds=SNIP, batch_size=3, cache=cache)
    a, b = read_shards(first), read_shards(second)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    pd.testing.assert_frame_equal(a.snippets, b.snippets)
    pd.testing.assert_frame_equal(a.files, b.files)
    # the in-process pipeline finds what Ray stored
    got = embed_files(files, get_encoder("features"), snippet_seconds=SNIP, cache=cache)
    assert got.n_cached == 6
    np.testing.assert_allclose(got.vectors, a.vectors, atol=1e-6)
