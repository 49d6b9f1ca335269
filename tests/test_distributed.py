"""The embedding engine on Ray Data, on a two-node Ray cluster simulated here; indexes built from its shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")  # in the dev extra: CI runs this

from clapknn import Tagger, build_index  # noqa: E402
from clapknn.embedding.ray import embed_with_ray  # noqa: E402
from clapknn.embedding.shards import index_from_shards, library_from_shards, read_shards
from clapknn.embedding.encode import embed_files  # noqa: E402
from clapknn.encoders import get_encoder  # noqa: E402
from clapknn.errors import IndexFormatError, ParameterError  # noqa: E402
from clapknn.library import similar  # noqa: E402

from conftest import STYLES, make_examples, tone, write_audio  # noqa: E402

SNIP = 2.0


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine (``ray.cluster_utils.Cluster``): a head and a worker of one CPU each."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 1024**2,
                                                          "include_dashboard": False})
    nodes.add_node(num_cpus=1, object_store_memory=100 * 1024**2)
    ray.init(address=nodes.address, log_to_driver=False, configure_logging=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


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
    out = embed_with_ray(examples, root / "shards", snippet_seconds=SNIP, batch_size=3, num_encoders=2, files_per_task=2)
    return examples, out


def test_shards_hold_what_embed_files_gives(shards):
    examples, out = shards
    assert (out / "shards.json").is_file() and list(out.glob("*.parquet"))
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and p.suffix != ".lock"]
    assert leftovers == []  # swapped in: no temporary or previous folder left
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
    assert index.vote is not None  # fitted once and saved, as build_index does
    assert index.vote["attributes"]["standardized_"] == reference.vote["attributes"]["standardized_"]
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
    with pytest.raises(IndexFormatError, match="missing part-"):
        read_shards(partial)
    changed = tmp_path / "changed"
    import shutil

    shutil.copytree(out, changed)
    shard = sorted(changed.glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        read_shards(changed)


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
    from clapknn.embedding.shards import tag_shards

    examples, out = shards
    index = build_index(examples, snippet_seconds=SNIP)
    got = tag_shards(Tagger(index), out)
    want = Tagger(index).tag(examples)
    pd.testing.assert_frame_equal(got.tracks.drop(columns=[c for c in got.tracks if c.startswith("score")]),
                                  want.tracks.drop(columns=[c for c in want.tracks if c.startswith("score")]))
    np.testing.assert_allclose(got.tracks["score"], want.tracks["score"], atol=1e-5)
    assert sorted(p for p, _ in got.skipped) == sorted(p for p, _ in want.skipped)
    # with sampling, the shards' snippets are cut down to the windows tagging would read
    every = Tagger(index, max_snippets="all").tag(examples)
    got2 = tag_shards(Tagger(index, max_snippets=2), out)
    want2 = Tagger(index, max_snippets=2).tag(examples)
    assert (every.tracks["n_snippets"] > 2).any()  # some file has more windows than are read
    assert list(got2.tracks["n_snippets"]) == list(want2.tracks["n_snippets"]) and got2.tracks["n_snippets"].max() <= 2
    pd.testing.assert_frame_equal(got2.snippets[["path", "start", "end"]], want2.snippets[["path", "start", "end"]])
    np.testing.assert_allclose(got2.tracks["score"], want2.tracks["score"], atol=1e-5)
    other = build_index(examples, snippet_seconds=1.0)
    from clapknn.errors import EncoderMismatchError

    with pytest.raises(EncoderMismatchError):
        tag_shards(Tagger(other), out)


def test_worker_with_another_encoder_is_refused():
    from clapknn.embedding.ray import _EngineActor
    from clapknn.errors import EncoderMismatchError

    identity = get_encoder("features").identity()
    settings = dict(snippet_seconds=SNIP, hop_seconds=SNIP, batch_size=3, cache=None)
    _EngineActor("features", {}, identity, **settings)  # the same encoder: accepted
    with pytest.raises(EncoderMismatchError, match="Ray worker"):
        _EngineActor("features", {}, {**identity, "recipe": -1}, **settings)


def test_the_actors_make_the_engines_vector_check(tmp_path):
    """An encoder giving NaN for some audio: the file is a failure in the shard rows, as in embed_files."""
    from clapknn.embedding.ray import _EngineActor
    from clapknn.embedding.shards import _embedded_from_tables

    loud = write_audio(tmp_path / "loud.wav", tone(330.0, 4.0, amp=0.8))
    fine = write_audio(tmp_path / "fine.wav", tone(660.0, 4.0, amp=0.2))
    identity = get_encoder("features").identity()
    actor = _EngineActor("features", {}, identity, snippet_seconds=SNIP, hop_seconds=SNIP, batch_size=3, cache=None)
    real = actor.encoder.embed

    def nan_when_loud(audio):
        out = np.asarray(real(audio), dtype=np.float32).copy()
        out[np.abs(audio).max(axis=1) > 0.5] = np.nan
        return out

    actor.encoder.embed = nan_when_loud
    table = actor({"file": np.array([0, 1]), "path": np.array([str(loud), str(fine)])})
    emb = _embedded_from_tables([table], {"dim": identity["dim"], "n_files": 2}, tmp_path)
    assert dict(emb.failures) == {str(loud): "the encoder gave non-finite values (NaN or inf) for this audio"}
    assert emb.files["n_snippets"].tolist() == [0, 2] and np.isfinite(emb.vectors).all()


def test_ray_pipeline_reads_and_fills_the_embedding_cache(shards, tmp_path):
    """A first run stores every fresh file (silent ones too, not undecodable ones); a second run's
    actors take them from the cache instead of embedding them, and the shards come out the same;
    the cache is shared with the in-process pipeline both ways."""
    from clapknn.embedding.cache import EmbeddingCache

    examples, _ = shards
    cache = tmp_path / "cache"
    first = embed_with_ray(examples, tmp_path / "a", snippet_seconds=SNIP, batch_size=3, cache=cache, num_encoders=2)
    assert EmbeddingCache(cache).stats()["entries"] == 6  # 5 usable files and the silent one
    assert read_shards(first).n_cached == 0
    second = embed_with_ray(examples, tmp_path / "b", snippet_seconds=SNIP, batch_size=3, cache=cache, num_encoders=2)
    a, b = read_shards(first), read_shards(second)
    assert b.n_cached == 6  # broken.wav and nan.wav are decoded (and refused) again: failures are not cached
    np.testing.assert_array_equal(a.vectors, b.vectors)
    pd.testing.assert_frame_equal(a.snippets, b.snippets)
    pd.testing.assert_frame_equal(a.files, b.files)
    # the in-process pipeline finds what Ray stored, and Ray what the in-process pipeline stored
    files, _ = Tagger.collect_files(examples)
    got = embed_files(files, get_encoder("features"), snippet_seconds=SNIP, cache=cache)
    assert got.n_cached == 6
    np.testing.assert_allclose(got.vectors, a.vectors, atol=1e-6)
    local = tmp_path / "local-cache"
    embed_files(files, get_encoder("features"), snippet_seconds=SNIP, cache=local)
    assert read_shards(embed_with_ray(examples, tmp_path / "c", snippet_seconds=SNIP, cache=local)).n_cached == 6


def test_a_worker_node_removed_mid_run(cluster, tmp_path):
    """A node lost while its actor embeds: the job completes on the other nodes, and every file is in
    the shards once, with the vectors a local run gives."""
    import threading
    import time

    from clapknn.embedding.cache import EmbeddingCache

    music = tmp_path / "music"
    for i in range(16):
        write_audio(music / f"t{i:02d}.wav", tone(150.0 * (1 + 0.1 * i), 6.0, seed=i, pulse_bpm=60.0 + 5 * i))
    doomed = cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2)
    cluster.wait_for_nodes()
    cache = tmp_path / "cache"
    result: dict = {}

    def run() -> None:
        try:
            result["out"] = embed_with_ray(music, tmp_path / "shards", snippet_seconds=SNIP, batch_size=3,
                                           num_encoders=3, files_per_task=1, cache=cache)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + 300
    while EmbeddingCache(cache, memo=False).stats()["entries"] < 2 and job.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    removed_mid_run = job.is_alive() and EmbeddingCache(cache, memo=False).stats()["entries"] < 16
    cluster.remove_node(doomed, allow_graceful=False)
    job.join(timeout=600)
    assert not job.is_alive() and "error" not in result, result.get("error")
    assert removed_mid_run  # the node went while files were still being embedded
    emb = read_shards(result["out"])  # exactly one status row per file, or it refuses
    assert sorted(Path(p).name for p in emb.files["path"]) == [f"t{i:02d}.wav" for i in range(16)]
    assert not emb.failures
    want = embed_files(sorted(music.glob("*.wav")), get_encoder("features"), snippet_seconds=SNIP)
    pd.testing.assert_frame_equal(emb.snippets, want.snippets, check_dtype=False)  # no snippet twice
    np.testing.assert_allclose(emb.vectors, want.vectors, atol=1e-6)
