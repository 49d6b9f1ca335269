"""One embedding engine: files and in-memory arrays go through the same vector check."""

from __future__ import annotations

import numpy as np
import pytest

from clapknn.embedding.encode import embed_array, embed_files
from clapknn.encoders.base import Encoder
from clapknn.errors import AudioError

from conftest import tone, write_audio

NON_FINITE = "the encoder gave non-finite values (NaN or inf) for this audio"


class LoudIsNaN(Encoder):
    """Unit vectors of a snippet's level, NaN for a loud snippet."""

    name, sample_rate, dim = "loud-is-nan", 22050, 3

    def embed(self, audio):
        peak = np.abs(audio).max(axis=1)
        v = np.stack([peak, audio.std(axis=1), np.ones(len(audio))], axis=1)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        v[peak > 0.5] = np.nan
        return v.astype(np.float32)


def test_a_file_with_non_finite_vectors_is_skipped_with_the_reason(tmp_path):
    loud = write_audio(tmp_path / "loud.wav", tone(330.0, 4.0, amp=0.8))
    fine = write_audio(tmp_path / "fine.wav", tone(330.0, 4.0, amp=0.2))
    emb = embed_files([loud, fine], LoudIsNaN(), snippet_seconds=2.0)
    assert emb.failures == [(str(loud), NON_FINITE)]
    assert emb.files["n_snippets"].tolist() == [0, 2] and np.isfinite(emb.vectors).all()


def test_an_array_with_non_finite_vectors_is_refused_as_a_file_is(tmp_path):
    with pytest.raises(AudioError, match=r"non-finite values \(NaN or inf\)"):
        embed_array(tone(330.0, 4.0, amp=0.8), 22050, LoudIsNaN(), snippet_seconds=2.0)
    vectors, snippets = embed_array(tone(330.0, 4.0, amp=0.2), 22050, LoudIsNaN(), snippet_seconds=2.0)
    assert vectors.shape == (2, 3) and np.isfinite(vectors).all() and snippets["start"].tolist() == [0.0, 2.0]


# ----------------------------------------------------------------------------- worker processes


class LoudIsNaNInWorkers(LoudIsNaN):
    """:class:`LoudIsNaN`, run by the worker processes on the snippets they decode."""

    encodes_in_workers = True


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    """Stereo files at 44.1 kHz (resampled and read by seeking), a silent one and a broken one."""
    root = tmp_path_factory.mktemp("tracks")
    paths = []
    for i, seconds in enumerate((31.0, 12.0, 4.0, 47.5)):
        y = tone(150.0 * (i + 1), seconds, 44100, seed=i, pulse_bpm=90 + 10 * i)
        paths.append(write_audio(root / f"t{i}.flac", np.stack([y, 0.5 * y[::-1]], axis=1), 44100))
    paths.insert(2, write_audio(root / "silent.wav", np.zeros(44100 * 3, np.float32), 44100))
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    paths.insert(1, broken)
    return paths


def test_features_encoded_in_workers_give_the_same_vectors(tracks, monkeypatch):
    """The features encoder runs in the worker processes (none of its work in this one), and the
    vectors, windows and failures are those of encoding here, whatever the worker count and batch size."""
    from clapknn.encoders.features import FeaturesEncoder

    kw = dict(snippet_seconds=5.0, max_snippets=3, hashes=False)
    enc = FeaturesEncoder()
    here = embed_files(tracks, enc, workers=0, batch_size=16, **kw)
    assert len(here.vectors) == 3 + 2 + 1 + 3 and len(here.failures) == 2

    def refuse(self, snippets):
        raise AssertionError("the features encoder ran in the calling process")

    monkeypatch.setattr(FeaturesEncoder, "embed", refuse)  # workers hold their own copy of the class
    for workers, batch_size in ((2, 1), (1, 2), ("auto", 16)):
        there = embed_files(tracks, enc, workers=workers, batch_size=batch_size, **kw)
        np.testing.assert_array_equal(there.vectors, here.vectors)
        assert there.snippets.equals(here.snippets)
        cols = ["path", "duration", "n_snippets", "n_silent", "error"]
        assert there.files[cols].equals(here.files[cols])
    with pytest.raises(AssertionError, match="calling process"):
        embed_files(tracks[:1], enc, workers=0, **kw)


def test_vectors_encoded_in_workers_are_checked_here(tmp_path):
    loud = write_audio(tmp_path / "loud.wav", tone(330.0, 4.0, amp=0.8))
    fine = write_audio(tmp_path / "fine.wav", tone(330.0, 4.0, amp=0.2))
    emb = embed_files([loud, fine], LoudIsNaNInWorkers(), snippet_seconds=2.0, workers=2)
    assert emb.failures == [(str(loud), NON_FINITE)]
    assert emb.files["n_snippets"].tolist() == [0, 2] and np.isfinite(emb.vectors).all()


def test_auto_workers_one_per_core_for_an_encoder_that_encodes_in_them():
    import os

    from clapknn.embedding.workers import resolve_workers
    from clapknn.errors import ParameterError

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolve_workers("auto", LoudIsNaNInWorkers()) == cores
    assert resolve_workers("auto", LoudIsNaN()) == 0  # a model: a decoding thread beside it
    assert resolve_workers(3, LoudIsNaN()) == 3
    for bad in (-1, "many", 1.5, True):
        with pytest.raises(ParameterError, match="workers must be 'auto' or an integer"):
            resolve_workers(bad, LoudIsNaN())


def test_cli_workers_option(capsys):
    from clapknn.cli import build_parser, main

    parser = build_parser()
    assert parser.parse_args(["tag", "x.wav", "--index", "i"]).workers == "auto"
    assert parser.parse_args(["tag", "x.wav", "--index", "i", "--workers", "0"]).workers == 0
    assert parser.parse_args(["build", "ex", "--workers", "AUTO"]).workers == "auto"
    with pytest.raises(SystemExit) as exc:
        main(["tag", "x.wav", "--index", "i", "--workers", "lots"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("argument --workers: workers must be 'auto' or an integer of at least 0, got 'lots'")
    assert "Traceback" not in "\n".join(err)


def _worker_report():
    from clapknn.embedding import workers

    return workers._worker_keeps_memory, workers._worker_encoder is not None


def test_workers_keep_freed_memory_mapped_on_glibc():
    """Each worker asks glibc to keep large freed arrays mapped (a snippet's spectra are made and
    freed per snippet); elsewhere nothing is asked. The calling process is left as it was."""
    import platform

    from clapknn.embedding import workers
    from clapknn.encoders.features import FeaturesEncoder

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    pool = workers.worker_pool(2, FeaturesEncoder())
    try:
        reports = [pool.submit(_worker_report).result() for _ in range(4)]
    finally:
        pool.shutdown()
    assert reports == [(glibc, True)] * 4
    assert workers._worker_keeps_memory is False  # only the workers' initializer sets it
