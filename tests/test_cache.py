"""Embedding cache and the streaming engine: hits skip decoding and encoding, misses are exact."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapknn.embedding.cache import CachedFile, EmbeddingCache, default_cache_dir, resolve_cache, settings_key
from clapknn.embedding.encode import EmbeddedFiles, embed_files
from clapknn.encoders.base import Encoder, l2_normalize
from clapknn.embedding.engine import iter_embeddings

from conftest import SR, make_examples, tone, write_audio


class BandEncoder(Encoder):
    """A fast deterministic test encoder: log energy in 24 FFT bands. Counts its calls."""

    name = "bands"
    sample_rate = 8000
    dim = 24

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.calls = 0
        self.snippets = 0

    def identity(self):
        return {**super().identity(), "scale": self.scale}

    def embed(self, snippets):
        self.calls += 1
        self.snippets += len(snippets)
        spec = np.abs(np.fft.rfft(np.asarray(snippets, dtype=np.float64), axis=1))
        bands = np.array_split(spec, self.dim, axis=1)
        return l2_normalize(np.stack([np.log1p(self.scale * b.mean(axis=1)) for b in bands], axis=1))


@pytest.fixture
def library(tmp_path: Path) -> list[Path]:
    root = make_examples(tmp_path / "lib", per_tag=3, seconds=5.0)
    write_audio(root / "odd" / "silent.wav", np.zeros(SR * 3, np.float32))
    (root / "odd" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    return sorted(root.rglob("*.wav"))


def _embed(paths, enc, **kw):
    return embed_files(paths, enc, snippet_seconds=2.0, batch_size=4, **kw)


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.vectors, b.vectors)
    pd.testing.assert_frame_equal(a.snippets, b.snippets)
    cols = ["path", "duration", "n_snippets", "n_silent", "error"]
    pd.testing.assert_frame_equal(a.files[cols], b.files[cols])


def test_entry_round_trip_and_damage_detected(tmp_path):
    rng = np.random.default_rng(0)
    entry = CachedFile(rng.standard_normal((3, 5)).astype(np.float32), np.array([0.0, 2, 4]), np.array([2.0, 4, 5]), 5.0, 1)
    back = CachedFile.from_bytes(entry.to_bytes())
    np.testing.assert_array_equal(back.vectors, entry.vectors)
    np.testing.assert_array_equal(back.ends, entry.ends)
    assert (back.duration, back.n_silent) == (5.0, 1)
    data = bytearray(entry.to_bytes())
    data[40] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        CachedFile.from_bytes(bytes(data))
    with pytest.raises(ValueError):
        CachedFile.from_bytes(entry.to_bytes()[:-7])

    cache = EmbeddingCache(tmp_path / "c")
    cache.put("k", "ab" * 32, entry)
    assert cache.get("k", "ab" * 32) is not None
    f = cache._entry_path("k", "ab" * 32)
    f.write_bytes(f.read_bytes()[:-3])
    assert cache.get("k", "ab" * 32) is None
    assert not f.exists(), "a damaged entry is removed so it gets rewritten"
    assert cache.get("k", "cd" * 32) is None


def test_warm_cache_neither_reads_decodes_nor_encodes(library, tmp_path, monkeypatch):
    plain = _embed(library, BandEncoder())
    enc = BandEncoder()
    cold = _embed(library, enc, cache=tmp_path / "cache")
    _same(plain, cold)
    assert enc.snippets == len(plain.vectors)
    assert cold.n_cached == 0

    import clapknn.audio.snippet
    import clapknn.embedding.cache
    import clapknn.embedding.workers

    def boom(*a, **k):
        raise AssertionError("should not be called on a warm cache")

    monkeypatch.setattr(clapknn.audio.snippet, "iter_file_snippets", boom)
    monkeypatch.setattr(clapknn.embedding.workers, "file_sha256", boom)
    monkeypatch.setattr(clapknn.embedding.cache, "file_sha256", boom)
    broken = [p for p in library if p.name == "broken.wav"]
    good = [p for p in library if p.name != "broken.wav"]
    enc2 = BandEncoder()
    warm = _embed(good, enc2, cache=tmp_path / "cache")
    assert enc2.calls == 0
    assert warm.n_cached == len(good)  # the silent file too
    _same(EmbeddedFiles(*_subset(plain, good)), warm)
    silent = next(p for p in good if p.name == "silent.wav")
    assert warm.files.set_index("path").loc[str(silent), "error"].startswith("silent")
    # the undecodable file is never cached: one entry per decodable file, and a later run retries it
    assert EmbeddingCache(tmp_path / "cache").stats()["entries"] == len(good)
    monkeypatch.undo()
    retry = _embed(broken, BandEncoder(), cache=tmp_path / "cache")
    assert retry.n_cached == 0 and len(retry.vectors) == 0
    assert retry.files.loc[0, "error"]  # decoded again, and failed again


def _subset(emb, keep):
    """The rows of an EmbeddedFiles for the files in ``keep`` (renumbered as if embedded alone)."""
    keep = [str(p) for p in keep]
    files = emb.files[emb.files["path"].isin(keep)].reset_index(drop=True)
    mask = emb.snippets["path"].isin(keep).to_numpy()
    snippets = emb.snippets[mask].reset_index(drop=True)
    snippets["file"] = [keep.index(p) for p in snippets["path"]]
    return emb.vectors[mask], snippets, files


def test_changed_file_is_redone_and_others_are_hits(library, tmp_path):
    cache = tmp_path / "cache"
    _embed(library, BandEncoder(), cache=cache)
    target = library[0]
    before = os.stat(target)
    write_audio(target, tone(1500.0, 4.0, seed=9))  # different audio, same path
    assert os.stat(target).st_mtime_ns != before.st_mtime_ns or os.stat(target).st_size != before.st_size
    enc = BandEncoder()
    again = _embed(library, enc, cache=cache)
    fresh = _embed(library, BandEncoder())
    _same(fresh, again)
    assert enc.snippets == 2  # 4 s at 2-s snippets: only the changed file was encoded
    assert again.n_cached == len(library) - 2  # the changed file and the undecodable one


def test_touch_rehashes_but_stays_a_hit(library, tmp_path):
    cache = tmp_path / "cache"
    _embed(library, BandEncoder(), cache=cache)
    st = os.stat(library[1])
    os.utime(library[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    enc = BandEncoder()
    _embed(library, enc, cache=cache)
    assert enc.calls == 0  # same bytes: a new hash lookup, still a hit


def test_settings_change_is_a_miss(library, tmp_path):
    cache = tmp_path / "cache"
    _embed(library, BandEncoder(), cache=cache)
    enc = BandEncoder(scale=2.0)  # another identity
    _embed(library, enc, cache=cache)
    assert enc.snippets > 0
    enc = BandEncoder()
    embed_files(library, enc, snippet_seconds=1.0, cache=cache)  # another snippet length
    assert enc.snippets > 0
    ident = BandEncoder().identity()
    assert settings_key(ident, 2.0, None) == settings_key(ident, 2.0, 2.0)
    assert settings_key(ident, 2.0, 1.0) != settings_key(ident, 2.0, 2.0)


def test_damaged_memo_falls_back_to_hashing(library, tmp_path):
    cache = tmp_path / "cache"
    _embed(library, BandEncoder(), cache=cache)
    (cache / "hashes.sqlite").write_bytes(b"this is not a database" * 100)
    for extra in ("hashes.sqlite-wal", "hashes.sqlite-shm"):
        (cache / extra).unlink(missing_ok=True)
    enc = BandEncoder()
    again = _embed(library, enc, cache=cache)
    assert enc.calls == 0 and again.n_cached == len(library) - 1


def test_memo_records_files(library, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    sha = cache.file_sha256(library[0])
    from clapknn.audio.digests import file_sha256

    assert sha == file_sha256(library[0])
    cache.close()
    con = sqlite3.connect(tmp_path / "cache" / "hashes.sqlite")
    (n,) = con.execute("SELECT COUNT(*) FROM hashes").fetchone()
    con.close()
    assert n == 1
    assert cache.stats()["entries"] == 0


def test_stream_yields_in_order_and_stops_early(library):
    enc = BandEncoder()
    seen = [fe.index for fe in iter_embeddings(library, enc, snippet_seconds=2.0, batch_size=3)]
    assert seen == list(range(len(library)))
    it = iter_embeddings(library, BandEncoder(), snippet_seconds=2.0)
    first = next(it)
    it.close()  # the source thread must stop, not hang
    assert first.index == 0 and first.n_snippets == 3  # 5 s in 2-s snippets: 0, 2 and the end-aligned 3 s


def test_workers_give_the_same_result(library, tmp_path):
    plain = _embed(library, BandEncoder())
    multi = _embed(library, BandEncoder(), workers=2)
    _same(plain, multi)
    both = _embed(library, BandEncoder(), workers=2, cache=tmp_path / "c")
    _same(plain, both)


def test_long_file_is_streamed_by_the_caller_not_a_worker(tmp_path, monkeypatch):
    import clapknn.audio.snippet

    monkeypatch.setattr(clapknn.audio.snippet, "WHOLE_FILE_SECONDS", 3.0)  # the worker reads it in the parent
    p = write_audio(tmp_path / "long.wav", tone(330.0, 7.0))
    from clapknn.embedding.workers import decode_file

    assert decode_file(str(p), 8000, 2.0, None, False) is None
    got = [fe for fe in iter_embeddings([p], BandEncoder(), snippet_seconds=2.0, workers=1)]
    assert got[0].n_snippets == 4 and got[0].error == ""  # 0, 2, 4 and the end-aligned 5 s


def test_build_index_twice_from_cache_is_identical(examples_dir, tmp_path):
    from clapknn import build_index

    a = build_index(examples_dir, snippet_seconds=2.0, cache=tmp_path / "c")
    b = build_index(examples_dir, snippet_seconds=2.0, cache=tmp_path / "c")
    assert b.report.files["sha256"].str.len().eq(64).all()
    np.testing.assert_array_equal(a.vectors, b.vectors)
    pd.testing.assert_frame_equal(a.metadata, b.metadata)


def test_default_dir_and_resolve(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAPKNN_EMBEDDING_CACHE", raising=False)
    monkeypatch.setenv("CLAPKNN_CACHE", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "embeddings"
    monkeypatch.setenv("CLAPKNN_EMBEDDING_CACHE", str(tmp_path / "emb"))
    assert default_cache_dir() == tmp_path / "emb"
    assert resolve_cache(True).root == tmp_path / "emb"
    monkeypatch.setenv("CLAPKNN_EMBEDDING_CACHE", "off")
    assert default_cache_dir() is None and resolve_cache(True) is None
    assert resolve_cache(False) is None and resolve_cache(None) is None
    assert resolve_cache(tmp_path / "x").root == tmp_path / "x"
    from clapknn.errors import ParameterError

    with pytest.raises(ParameterError):
        resolve_cache(3)


def test_cli_build_uses_the_cache_and_cache_command(examples_dir, tmp_path, capsys):
    from clapknn.cli import main

    cache = tmp_path / "c"
    args = ["build", str(examples_dir), "--out", str(tmp_path / "idx"), "--snippet-seconds", "2", "-q", "--cache", str(cache)]
    assert main(args) == 0
    first = _index_vectors(tmp_path / "idx")
    assert main(args + ["--workers", "1"]) == 0
    np.testing.assert_array_equal(_index_vectors(tmp_path / "idx"), first)
    capsys.readouterr()
    assert main(["cache", "--dir", str(cache)]) == 0
    assert "6 entries" in capsys.readouterr().out
    assert main(["cache", "--dir", str(cache), "--clear"]) == 0
    assert "removed 6 entries" in capsys.readouterr().out
    assert EmbeddingCache(cache).stats()["entries"] == 0


def _index_vectors(path):
    from clapknn.index import Index

    return Index.load(path).vectors


def test_a_named_pipe_is_not_hashed(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        EmbeddingCache(tmp_path / "c").file_sha256(fifo)  # would block forever if it were read


@pytest.mark.parametrize("suffix", [".flac", ".wav", ".ogg"])
def test_writing_tags_into_a_file_keeps_its_cache_entry(tmp_path, suffix):
    """``clapknn tag --write`` changes a file's bytes but not its audio: the next run finds it."""
    from clapknn.players import write_tags

    f = write_audio(tmp_path / f"a{suffix}", tone(440.0, 4.0))
    cache = tmp_path / "cache"
    first = _embed([f], BandEncoder(), cache=cache)
    assert write_tags(f, ["calm"]).status == "written"
    enc = BandEncoder()
    again = _embed([f], enc, cache=cache)
    assert enc.calls == 0 and again.n_cached == 1
    assert again.files["sha256"][0] != first.files["sha256"][0]  # the file's bytes did change
    _same(first, again)
    # new audio under the same tags is a miss
    write_audio(f, tone(660.0, 4.0))
    write_tags(f, ["calm"])
    enc = BandEncoder()
    _embed([f], enc, cache=cache)
    assert enc.snippets == 2


def test_content_key_covers_the_stream_parameters_and_falls_back_to_the_file(tmp_path):
    from clapknn.embedding.cache import audio_content_key
    from clapknn.audio.digests import file_sha256

    y = tone(440.0, 2.0)
    a = write_audio(tmp_path / "a.wav", y, subtype="PCM_16")
    same = write_audio(tmp_path / "same.wav", y, subtype="PCM_16")
    faster = write_audio(tmp_path / "faster.wav", y, sr=2 * SR, subtype="PCM_16")  # same data chunk bytes
    assert audio_content_key(a) == audio_content_key(same)
    assert audio_content_key(a) != audio_content_key(faster)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00" * 1000)
    assert audio_content_key(odd) is None
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.content_key(odd) == (file_sha256(odd), file_sha256(odd))
    sha, key = cache.content_key(a)
    assert sha == file_sha256(a) and key == audio_content_key(a)
    assert cache.content_key(a) == (sha, key)  # from the memo now
    cache.close()


def test_a_memo_from_before_content_keys_is_upgraded(library, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    con = sqlite3.connect(root / "hashes.sqlite")
    con.execute("CREATE TABLE hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, sha256 TEXT)")
    con.execute("INSERT INTO hashes VALUES ('/nowhere', 1, 2, 3, 4, 'ab')")
    con.commit()
    con.close()
    enc = BandEncoder()
    first = _embed(library, enc, cache=root)
    enc2 = BandEncoder()
    again = _embed(library, enc2, cache=root)
    assert enc2.calls == 0 and again.n_cached == first.n_cached + len(library) - 1
