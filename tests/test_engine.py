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
