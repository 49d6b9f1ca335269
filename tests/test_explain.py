"""tag --explain: the examples that voted, pooled per example file, and the kept snippet vectors."""

from __future__ import annotations

import numpy as np
import pytest

from clapknn import Tagger
from clapknn.cli import main
from conftest import STYLES, tone, write_audio


@pytest.fixture
def query(tmp_path):
    style = STYLES["energetic"]
    return write_audio(tmp_path / "query.wav", tone(style["freq"] * 1.01, 6.0, seed=9, pulse_bpm=style["pulse_bpm"]))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_neighbors_are_example_files_with_votes(built_index, query, k):
    index, _ = built_index
    tagger = Tagger(index, k=k)
    result = tagger.tag(query, explain=True)
    nb = result.neighbors
    n_snippets = int(result.tracks["n_snippets"].iat[0])
    assert list(nb.columns) == ["path", "neighbor", "neighbor_start", "neighbor_tags", "similarity", "votes"]
    assert nb["neighbor"].is_unique  # one row per example file, not per snippet
    assert nb["similarity"].is_monotonic_decreasing
    assert (nb["similarity"] <= 1.0 + 1e-5).all() and (nb["votes"] >= 1).all()
    if len(nb) < 5:  # every voter listed: the votes fill all n_snippets × k slots
        assert nb["votes"].sum() == n_snippets * k
    # the closest example carries the tag that won
    assert nb["neighbor_tags"].iat[0] == result.tracks["top"].iat[0] == "energetic"
    # its similarity is the best cosine between a query snippet and one of its snippets, as the
    # search compares them (the encoder may ask for a standardised space: estimator.to_search_space)
    meta = index.metadata
    rows = np.flatnonzero(meta["path"].astype(str).to_numpy() == nb["neighbor"].iat[0])
    space = tagger.estimator.to_search_space
    best = float((space(result.vectors) @ space(index.vectors[rows]).T).max())
    assert nb["similarity"].iat[0] == pytest.approx(best, abs=1e-4)


def test_vectors_align_with_snippets_only_when_explaining(built_index, query):
    index, _ = built_index
    tagger = Tagger(index)
    explained = tagger.tag(query, explain=True)
    assert explained.vectors.shape == (len(explained.snippets), index.dim)
    assert explained.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(explained.vectors, axis=1), 1.0, atol=1e-4)
    assert tagger.tag(query).vectors is None


def test_cli_explain_lists_examples_with_votes(built_index, query, capsys):
    _, root = built_index
    assert main(["tag", str(query), "--index", str(root / "index"), "--explain", "-k", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "nearest examples (similarity, tags, votes of 3 per snippet" in out
    assert f"{query} → energetic" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ") and "energetic_" in ln]
    assert lines and lines[0].split()[1] == "energetic"
