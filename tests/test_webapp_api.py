"""``clapknn serve``: every endpoint of the web app through Starlette's TestClient (no browser)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the web extra (starlette) is not installed: pip install 'clapknn[web]'")

from conftest import make_examples, tone, write_audio  # noqa: E402

TRACKS = {"calmish": (115.0, 60.0), "fast": (860.0, 150.0), "mid": (330.0, 100.0)}


def make_library(root: Path, per_group: int = 4) -> Path:
    """Three groups of near-identical tracks: two close to the index's tags, one ("mid") between."""
    for j, (group, (freq, bpm)) in enumerate(TRACKS.items()):
        for i in range(per_group):
            write_audio(root / group / f"{group[0]}{i}.wav", tone(freq * (1 + 0.01 * i), 4.0, seed=10 * j + i, pulse_bpm=bpm))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from clapknn import build_index

    root = tmp_path_factory.mktemp("webapp")
    build_index(make_examples(root / "examples", per_tag=2, seconds=4.0), root / "index", snippet_seconds=2.0)
    make_library(root / "library")
    return root


@pytest.fixture
def site(built, tmp_path):
    """A fresh copy of the index and library, tagged, with a client of the app."""
    from starlette.testclient import TestClient

    from clapknn.webapp.app import create_app
    from clapknn.webapp.session import Curator

    shutil.copytree(built / "index", tmp_path / "index")
    shutil.copytree(built / "library", tmp_path / "library")
    shutil.copytree(built / "examples", tmp_path / "examples")
    curator = Curator(tmp_path / "index", tmp_path / "library", k=1, cache=False)
    curator.start(background=False)
    assert curator.state == "ready", curator.error
    app = create_app(curator, allowed_hosts=["testserver"])
    client = TestClient(app)
    client.token = {"X-Clapknn-Token": app.state.token}
    client.root = tmp_path
    client.curator = curator
    return client


def track_id(client, name: str) -> int:
    rows = client.get("/api/tracks", params={"q": name, "per_page": 500}).json()["rows"]
    return next(r["id"] for r in rows if r["name"] == name)


def tops(client) -> dict[str, str]:
    return {r["name"]: r["top"] for r in client.get("/api/tracks", params={"per_page": 500}).json()["rows"]}


def index_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "index").iterdir())}


# --------------------------------------------------------------------------- page and status
def test_page_carries_the_session_token_and_its_own_script(site):
    page = site.get("/")
    assert page.status_code == 200
    assert site.token["X-Clapknn-Token"] in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere
    js, css = site.get("/static/app.js"), site.get("/static/app.css")
    assert js.status_code == 200 and "X-Clapknn-Token" in js.text
    assert css.status_code == 200 and "table" in css.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_status_reports_the_tagged_library(site):
    s = site.get("/api/status").json()
    assert s["state"] == "ready" and s["done"] == s["total"] == 12
    assert s["tags"] == ["calm", "energetic"]
    assert s["n_tracks"] == 12 and s["n_examples"] == 4 and s["undo"] == 0
    assert sum(s["counts"].values()) == 12


def test_progress_is_reported_while_the_library_is_tagged(built, monkeypatch):
    import threading

    from starlette.testclient import TestClient

    import clapknn.embedding.engine
    from clapknn.webapp.app import create_app
    from clapknn.webapp.session import Curator

    real, gate = clapknn.embedding.engine.iter_embeddings, threading.Event()

    def slow(*args, **kwargs):  # hold the tagging after the first file
        for i, fe in enumerate(real(*args, **kwargs)):
            yield fe
            if i == 0:
                assert gate.wait(60)

    monkeypatch.setattr(clapknn.embedding.engine, "iter_embeddings", slow)
    curator = Curator(built / "index", built / "library", cache=False)
    client = TestClient(create_app(curator, allowed_hosts=["testserver"]))
    curator.start()
    try:
        for _ in range(600):
            s = client.get("/api/status").json()
            if s["done"] >= 1:
                break
            threading.Event().wait(0.05)
        assert s["state"] == "tagging" and s["done"] == 1 and s["total"] == 12
        busy = client.get("/api/tracks")
        assert busy.status_code == 400 and "being tagged (1 of 12" in busy.json()["error"]
    finally:
        gate.set()
        curator.wait(60)
    assert client.get("/api/status").json()["state"] == "ready"


def test_host_header_of_another_name_is_refused(site):
    assert site.get("/api/status", headers={"Host": "evil.example"}).status_code == 400


# --------------------------------------------------------------------------- the table
def test_tracks_page_sort_filter_and_search(site):
    first = site.get("/api/tracks", params={"per_page": 5}).json()
    assert first["total"] == 12 and first["pages"] == 3 and len(first["rows"]) == 5
    names = [r["name"] for r in first["rows"]]
    assert names == sorted(names)
    third = site.get("/api/tracks", params={"per_page": 5, "page": 3}).json()
    assert len(third["rows"]) == 2
    row = first["rows"][0]
    assert set(row["scores"]) == {"calm", "energetic"} and row["score"] == max(row["scores"].values())
    assert row["margin"] == pytest.approx(abs(row["scores"]["calm"] - row["scores"]["energetic"]))
    fast = site.get("/api/tracks", params={"tag": "energetic"}).json()
    assert {r["name"] for r in fast["rows"]} >= {f"fast/f{i}.wav" for i in range(4)}
    assert all(r["top"] == "energetic" for r in fast["rows"])
    found = site.get("/api/tracks", params={"q": "MID/"}).json()
    assert sorted(r["name"] for r in found["rows"]) == [f"mid/m{i}.wav" for i in range(4)]
    by_score = site.get("/api/tracks", params={"sort": "score:energetic", "desc": "1", "per_page": 500}).json()["rows"]
    values = [r["scores"]["energetic"] for r in by_score]
    assert values == sorted(values, reverse=True)
    assert site.get("/api/tracks", params={"min": 2}).json()["total"] == 0
    assert site.get("/api/tracks", params={"max": 1, "min": 0}).json()["total"] == 12


def test_low_confidence_flag_follows_the_margin(site):
    site.curator.low_margin = 2.0  # every margin is below 2: every track is flagged
    site.curator._use(site.curator.tagger)
    assert site.get("/api/tracks", params={"low": "1"}).json()["total"] == 12
    site.curator.low_margin = 0.0
    site.curator._use(site.curator.tagger)
    assert site.get("/api/tracks", params={"low": "1"}).json()["total"] == 0


@pytest.mark.parametrize("params", [{"sort": "path; drop"}, {"min": "x"}, {"tag": "nope"}, {"per_page": 0}])
def test_bad_table_requests_get_one_error_line(site, params):
    r = site.get("/api/tracks", params=params)
    assert r.status_code == 400 and r.json()["error"]


# --------------------------------------------------------------------------- one track, why, audio
def test_track_detail_lists_the_examples_that_voted_and_they_play(site):
    tid = track_id(site, "calmish/c0.wav")
    d = site.get(f"/api/tracks/{tid}").json()
    assert d["track"]["top"] == "calm"
    assert d["why"] and d["why"][0]["tags"] == "calm"
    sims = [w["similarity"] for w in d["why"]]
    assert sims == sorted(sims, reverse=True) and 0 < sims[0] <= 1.0001
    audio = site.get(f"/audio/example/{d['why'][0]['example']}")
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert Path(d["why"][0]["path"]).read_bytes() == audio.content
    start, end = d["track"]["snippet"]
    assert 0 <= start < end <= 4.0 + 1e-6
    assert len(d["snippets"]) == 2
    assert site.get("/api/tracks/9999").status_code == 400


def test_audio_is_served_with_range_requests(site):
    path = site.root / "library" / "mid" / "m1.wav"
    data = path.read_bytes()
    whole = site.get("/audio/track/mid/m1.wav")
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    part = site.get("/audio/track/mid/m1.wav", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert part.content == data[100:200]
    tail = site.get("/audio/track/mid/m1.wav", headers={"Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.content == data[-10:]


def test_traversal_and_links_out_of_the_library_are_refused(site, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    secret = write_audio(outside / "secret.wav", tone(440.0, 2.0))
    (site.root / "library" / "notes.txt").write_text("not audio")
    for url in ("/audio/track/../index/manifest.json", "/audio/track/..%2F..%2Fetc%2Fpasswd",
                "/audio/track/%2Fetc%2Fpasswd", "/audio/track/notes.txt", "/audio/track/mid/..%2F..%2Findex%2Fmanifest.json"):
        r = site.get(url)
        assert r.status_code in (403, 404), url
        assert "format_version" not in r.text and "root:" not in r.text  # neither file's content leaks
    # a link inside the library that points out of it: not tagged, not served, listed with its reason
    (site.root / "library" / "link.wav").symlink_to(secret)
    from clapknn.webapp.session import Curator

    curator = Curator(site.root / "index", site.root / "library", k=1, cache=False)
    curator.start(background=False)
    from starlette.testclient import TestClient

    from clapknn.webapp.app import create_app

    client = TestClient(create_app(curator, allowed_hosts=["testserver"]))
    assert client.get("/audio/track/link.wav").status_code == 403
    skipped = client.get("/api/skipped").json()["skipped"]
    assert any(s["path"].endswith("link.wav") and "outside" in s["reason"] for s in skipped)
    assert client.get("/api/status").json()["n_tracks"] == 12
    assert client.get("/audio/example/99").status_code == 400


# --------------------------------------------------------------------------- labels, safety, undo
def test_state_changes_need_the_token_and_the_same_site(site):
    before = index_bytes(site.root)
    tid = track_id(site, "mid/m0.wav")
    body = {"id": tid, "tags": ["dreamy"]}
    assert site.post("/api/label", json=body).status_code == 403
    assert site.post("/api/label", json=body, headers={"X-Clapknn-Token": "wrong"}).status_code == 403
    assert site.post("/api/label", json=body, headers={**site.token, "Origin": "http://evil.example"}).status_code == 403
    assert site.post("/api/label", json=body, headers={**site.token, "Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert site.post("/api/undo", json={}).status_code == 403
    assert site.post("/api/export/filetags", json={"dry_run": False}).status_code == 403
    refused = site.post("/api/label", json=body)
    assert "token" in refused.json()["error"]
    assert index_bytes(site.root) == before
    # another site's page can link to the app but not read the table or play the files
    assert site.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
    assert site.get("/api/tracks", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert site.get("/audio/track/mid/m0.wav", headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    assert site.get("/audio/track/mid/m0.wav", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    ok = site.post("/api/label", json=body, headers={**site.token, "Origin": "http://testserver"})
    assert ok.status_code == 200


def test_a_new_tag_makes_the_track_an_example_and_its_neighbours_follow(site):
    from clapknn.tagging.tagger import load_index

    before = tops(site)
    assert {before[f"mid/m{i}.wav"] for i in range(4)} != {"dreamy"}
    r = site.post("/api/label", json={"id": track_id(site, "mid/m0.wav"), "tags": ["dreamy"]}, headers=site.token)
    assert r.status_code == 200, r.text
    out = r.json()
    assert {c["name"] for c in out["changed"]} == {f"mid/m{i}.wav" for i in range(4)}
    assert all(c["after"] == "dreamy" for c in out["changed"])
    after = tops(site)
    assert all(after[f"mid/m{i}.wav"] == "dreamy" for i in range(4))
    assert all(after[n] == before[n] for n in after if not n.startswith("mid/"))
    index = load_index(site.root / "index")
    assert "dreamy" in index.tags
    assert ("dreamy",) in set(index.metadata["tags"])
    assert out["status"]["tags"] == ["calm", "dreamy", "energetic"] and out["status"]["undo"] == 1
    changed = site.get("/api/tracks", params={"changed": "1"}).json()
    assert changed["total"] == 4
    assert site.get("/api/tracks", params={"q": "mid/m0"}).json()["rows"][0]["example"] == "dreamy"


def test_confirm_and_correct_and_undo_restore_the_index(site):
    from clapknn.tagging.tagger import load_index

    def content():
        meta = load_index(site.root / "index").metadata
        return sorted(zip(meta["path"], meta["start"], meta["tags"]))

    start, first_tops = content(), tops(site)
    fast = track_id(site, "fast/f0.wav")
    site.post("/api/label", json={"id": fast, "tags": ["energetic"]}, headers=site.token).raise_for_status()  # confirm
    site.post("/api/label", json={"id": fast, "tags": ["calm"]}, headers=site.token).raise_for_status()  # correct
    assert dict(zip(*zip(*[(p, t) for p, _, t in content()])))[str(site.root / "library" / "fast" / "f0.wav")] == ("calm",)
    assert site.get("/api/status").json()["undo"] == 2
    r = site.post("/api/undo", json={}, headers=site.token).json()
    assert "energetic" in r["message"]
    examples = {p: t for p, _, t in content()}
    assert examples[str(site.root / "library" / "fast" / "f0.wav")] == ("energetic",)
    site.post("/api/undo", json={}, headers=site.token).raise_for_status()
    assert content() == start
    assert tops(site) == first_tops
    again = site.post("/api/undo", json={}, headers=site.token)
    assert again.status_code == 400 and "nothing to undo" in again.json()["error"]


def test_a_failed_label_is_shown_and_leaves_the_index_whole(site):
    before = index_bytes(site.root)
    tid = track_id(site, "mid/m2.wav")
    (site.root / "library" / "mid" / "m2.wav").write_bytes(b"not audio any more")
    r = site.post("/api/label", json={"id": tid, "tags": ["calm"]}, headers=site.token)
    assert r.status_code == 400 and r.json()["error"]
    assert index_bytes(site.root) == before
    assert site.get("/api/status").json()["undo"] == 0
    for bad in ({"id": tid, "tags": []}, {"id": tid, "tags": ["a;b"]}, {"id": "x", "tags": ["calm"]}, {"id": 999, "tags": ["calm"]}):
        assert site.post("/api/label", json=bad, headers=site.token).status_code == 400
    not_json = site.post("/api/label", content=b"id=1", headers={**site.token, "Content-Type": "application/x-www-form-urlencoded"})
    assert not_json.status_code == 400


# --------------------------------------------------------------------------- label next
def test_queue_proposes_unlabelled_tracks_spread_over_the_library(site):
    rows = site.get("/api/queue", params={"n": 3}).json()["rows"]
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    assert all(not r["example"] for r in rows)
    first = rows[0]["id"]
    site.post("/api/label", json={"id": first, "tags": [rows[0]["top"]]}, headers=site.token).raise_for_status()
    assert first not in {r["id"] for r in site.get("/api/queue", params={"n": 12}).json()["rows"]}
    assert site.get("/api/queue", params={"n": 0}).status_code == 400


def test_label_next_prefers_uncertain_tracks_unlike_each_other():
    from clapknn.webapp.labelnext import label_next, margins

    scores = np.array([[0.5, 0.5], [0.51, 0.49], [0.9, 0.1], [0.55, 0.45], [1.0, 0.0]])
    assert margins(scores) == pytest.approx([0.0, 0.02, 0.8, 0.1, 1.0])
    vectors = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 1.0], [0.7, 0.7]])
    plain = dict(standardize=False, pool=2, density=0.0, clusters=False)
    only = dict(density=0.0, clusters=False)  # the defaults also ask for typical tracks and cluster centres
    assert label_next(scores, vectors, n=2, facility=False, balance=0.0, coverage=0.0, **only) == [0, 1]  # by margin only: the two near-copies
    assert label_next(scores, vectors, n=2, facility=False, balance=0.0, coverage=1.0, **plain) == [0, 3]  # spread: the copy of 0 is passed over
    assert 0 not in label_next(scores, vectors, n=2, exclude=[0])  # the defaults too
    assert label_next(scores, vectors, n=2, facility=False, balance=0.0, coverage=1.0, examples=np.array([[1.0, 0.0]]), **plain)[0] == 3
    # an excluded row (a track that is an example) counts as known: its near-copy is passed over
    assert label_next(scores, vectors, n=1, facility=False, balance=0.0, coverage=1.0, exclude=[0], **plain) == [3]
    # equal doubt: the density bonus prefers a typical track (row 1, among many like it) to an odd one (row 0)
    doubt = np.tile([[0.5, 0.5]], (6, 1))
    crowd = np.array([[0.0, 1.0], [1.0, 0.05], [1.0, 0.0], [1.0, 0.1], [1.0, -0.05], [0.95, 0.1]])
    assert label_next(doubt, crowd, n=1, facility=False, balance=0.0, coverage=0.0, **only)[0] == 0
    assert label_next(doubt, crowd, n=1, facility=False, balance=0.0, coverage=0.0, density=1.0, clusters=False, standardize=False)[0] != 0


def test_label_next_covers_the_library_farthest_first_before_doubt():
    from clapknn.webapp.labelnext import label_next

    # three tight clusters; the vote is most unsure inside cluster A, sure of B and C
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    vectors = np.repeat(centres, 5, axis=0) + 0.01 * rng.standard_normal((15, 3))
    scores = np.tile([[0.9, 0.1]], (15, 1))
    scores[:5] = [[0.5, 0.5]]
    cluster = np.arange(15) // 5
    assert set(cluster[label_next(scores, vectors, n=3, facility=False, balance=0.0, coverage=0.0, density=0.0, clusters=False)]) == {0}  # margin only: all from A
    assert sorted(cluster[label_next(scores, vectors, n=3, facility=False, balance=0.0, coverage=100.0, clusters=False)]) == [0, 1, 2]  # one per cluster
    # with A and B already covered by examples, the first pick comes from C whatever the doubt in A
    assert cluster[label_next(scores, vectors, n=1, facility=False, balance=0.0, coverage=3.0, density=0.0, clusters=False, examples=centres[:2])[0]] == 2
    # once every cluster is covered, the doubt decides again (coverage is then equal for all)
    assert cluster[label_next(scores, vectors, n=1, facility=False, balance=0.0, coverage=3.0, density=0.0, clusters=False, examples=centres)[0]] == 0
    assert label_next(scores, vectors, n=3) == label_next(scores.copy(), vectors.copy(), n=3)  # same input, same queue


def test_label_next_distances_are_standardised_on_the_library():
    from clapknn.webapp.labelnext import label_next, library_space

    # dimensions 0 and 1 have a large range but say nothing (noise); dimension 2 is small but splits the library
    rng = np.random.default_rng(1)
    side = np.repeat([0.0, 1.0], 10)
    vectors = np.column_stack([50.0 + 5.0 * rng.standard_normal((20, 2)), 0.5 * side])
    scores = np.tile([[0.5, 0.5]], (20, 1))
    space = library_space(vectors)[0]
    assert np.allclose(np.linalg.norm(space, axis=1), 1.0)
    assert np.abs(space.mean(axis=0)).max() < 0.05  # centred per dimension

    def far_side(**kw):  # side of the farthest-first pick, for an example at each track of side 0
        return [side[label_next(scores, vectors, n=1, facility=False, balance=0.0, coverage=100.0, clusters=False, examples=vectors[i:i + 1], **kw)[0]] for i in range(10)]

    assert far_side() == [1.0] * 10  # standardised: always the other side of the library

    def nearest_same_side(space):
        sims = space @ space.T
        np.fill_diagonal(sims, -np.inf)
        return np.mean(side[np.argmax(sims, axis=1)] == side)

    # neighbours share a side far more often once every dimension counts alike (plain cosine: the noise decides)
    assert nearest_same_side(space) >= nearest_same_side(library_space(vectors, standardize=False)[0]) + 0.2


def test_label_next_clusters_ask_the_centre_of_each_uncovered_cluster_largest_first():
    from clapknn.webapp.labelnext import label_next, library_space

    rng = np.random.default_rng(2)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sizes = [4, 9, 6]  # cluster 0 holds the example; 1 is the largest of the others
    cluster = np.repeat([0, 1, 2], sizes)
    vectors = centres[cluster] + 0.05 * rng.standard_normal((len(cluster), 3))
    scores = np.tile([[0.9, 0.1]], (len(cluster), 1))
    scores[cluster == 0] = [0.5, 0.5]  # the vote is unsure only where the example already is
    picks = label_next(scores, vectors, n=2, facility=False, balance=0.0, coverage=0.0, density=0.0, clusters=True, exclude=[0])
    assert list(cluster[picks]) == [1, 2]
    space = library_space(vectors)[0]
    for pick, c in zip(picks, (1, 2)):  # each pick is its cluster's most central track (in the queue's space)
        members = np.flatnonzero(cluster == c)
        centre = space[members].mean(axis=0)
        assert pick == members[np.argmin(np.linalg.norm(space[members] - centre, axis=1))]
    assert list(cluster[label_next(scores, vectors, n=2, facility=False, balance=0.0, coverage=0.0, density=0.0, clusters=False, exclude=[0])]) == [0, 0]  # without: the doubt


def test_label_next_balance_spreads_the_queue_over_predicted_tags():
    from clapknn.webapp.labelnext import label_next

    # four tracks the vote calls "a" (a little less sure each), two it calls "b"; all alike
    scores = np.array([[0.55, 0.45], [0.56, 0.44], [0.57, 0.43], [0.58, 0.42], [0.3, 0.7], [0.29, 0.71]])
    vectors = np.ones((6, 2)) + 1e-3 * np.arange(12).reshape(6, 2)
    top = np.argmax(scores, axis=1)
    assert list(top[label_next(scores, vectors, n=2, facility=False, balance=0.0, coverage=0.0, density=0.0, clusters=False)]) == [0, 0]
    assert sorted(top[label_next(scores, vectors, n=2, facility=False, coverage=0.0, density=0.0, clusters=False, balance=1.0, standardize=False)]) == [0, 1]


def test_label_next_first_ten_are_spread_over_the_library_not_near_duplicates():
    from clapknn.webapp.labelnext import label_next

    # twelve tight groups of near-duplicates; the vote is most unsure inside groups 0 and 1, and an
    # example already stands for group 11
    rng = np.random.default_rng(3)
    centres = np.eye(12)
    group = np.repeat(np.arange(12), 6)
    vectors = centres[group] + 0.02 * rng.standard_normal((len(group), 12))
    scores = np.tile([[0.8, 0.2]], (len(group), 1))
    scores[group < 2] = [0.5, 0.5]
    picks = label_next(scores, vectors, n=10, examples=centres[11:])
    assert len(picks) == 10 and len(set(group[picks])) == 10  # one track per group: no two near-duplicates
    assert 11 not in group[picks]  # the group an example stands for is left for later
    margin_only = label_next(scores, vectors, n=10, facility=False, clusters=False, coverage=0.0, density=0.0,
                             balance=0.0, examples=centres[11:])
    assert set(group[margin_only]) == {0, 1}  # what the queue avoids: ten near-copies from two groups


def test_label_next_asks_first_for_the_track_that_stands_for_the_most_tracks():
    from clapknn.webapp.labelnext import label_next

    # a crowd of nine alike tracks around a central one, and three odd tracks; none covered (the one
    # example is far from all of them)
    crowd = np.array([[1.0, 0.0, 0.0, 0.0]] + [[1.0, a, b, 0.0] for a, b in
                     ((0.3, 0), (-0.3, 0), (0, 0.3), (0, -0.3), (0.2, 0.2), (-0.2, 0.2), (0.2, -0.2), (-0.2, -0.2))])
    odd = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    vectors = np.vstack([odd, crowd[::-1]])  # the odd ones first (a tie would go to them), the centre last
    scores = np.tile([[0.5, 0.5]], (len(vectors), 1))
    example = np.array([[0.0, 0.0, 0.0, 1.0]])
    queue = label_next(scores, vectors, n=4, examples=example, standardize=False, balance=0.0)
    assert queue[0] == len(vectors) - 1  # the crowd's central track, which stands for the whole crowd
    assert set(queue[1:]) == {0, 1, 2}  # then the odd ones, each standing only for itself, before more of the crowd


def test_label_next_doubt_ranks_a_track_between_tags_above_one_deep_inside_a_tag():
    from clapknn.webapp.labelnext import label_next

    # group B (rows 0-5) lies deep inside a tag, the smaller group A (rows 6-10) between two tags
    rng = np.random.default_rng(5)
    vectors = np.repeat(np.eye(2), [6, 5], axis=0) + 0.01 * rng.standard_normal((11, 2))
    scores = np.array([[0.95, 0.05]] * 6 + [[0.5, 0.5]] * 5)
    plain = dict(facility=True, standardize=False, balance=0.0)
    assert label_next(scores, vectors, n=1, doubt_power=0.0, **plain)[0] < 6  # coverage alone: the larger group
    assert label_next(scores, vectors, n=1, doubt_power=1.0, **plain)[0] >= 6  # weighted by doubt: the one between tags
    # a cold start asks for coverage alone while fewer tracks than cold_start are known
    assert label_next(scores, vectors, n=1, doubt_power=1.0, cold_start=5, n_known=4, **plain)[0] < 6


def test_label_next_balance_spreads_the_facility_queue_over_predicted_tags():
    from clapknn.webapp.labelnext import label_next

    # three groups the vote calls "a" (the larger ones), one it calls "b"
    rng = np.random.default_rng(6)
    sizes = [8, 7, 6, 3]
    group = np.repeat(np.arange(4), sizes)
    vectors = np.eye(4)[group] + 0.02 * rng.standard_normal((len(group), 4))
    scores = np.where(group[:, None] < 3, [[0.7, 0.3]], [[0.3, 0.7]])
    top = np.argmax(scores, axis=1)
    plain = dict(facility=True, doubt_power=0.0, standardize=False)
    assert list(top[label_next(scores, vectors, n=2, balance=0.0, **plain)]) == [0, 0]  # the two largest groups
    assert sorted(top[label_next(scores, vectors, n=2, balance=2.0, **plain)]) == [0, 1]


def test_queue_measures_distances_in_the_space_the_vote_searches(site):
    from clapknn.webapp.labelnext import track_space

    c = site.curator
    lib = c.lib
    file_ids = lib.snippets["file"].to_numpy()
    tracks, examples, standardize = track_space(c.tagger, lib.vectors, file_ids, len(lib.files), space="vote")
    est = c.tagger.estimator
    assert not standardize
    searched = est.to_search_space(lib.vectors)
    for f in range(len(lib.files)):  # each track: the sum of its snippets' rows in the vote's search space
        assert np.allclose(tracks[f], searched[file_ids == f].sum(axis=0), atol=1e-5)
    assert np.allclose(examples, est.search_index.reconstruct_n(0, est.n_samples_fit_), atol=1e-6)
    raw, raw_examples, standardize = track_space(c.tagger, lib.vectors, file_ids, len(lib.files), space="library")
    assert standardize and np.allclose(raw_examples, c.tagger.index.vectors)


def test_queue_is_a_round_that_stays_put_while_its_tracks_are_labelled(site):
    first = [r["id"] for r in site.get("/api/queue", params={"n": 3}).json()["rows"]]
    groups = {site.get(f"/api/tracks/{i}").json()["track"]["name"].split("/")[0] for i in first}
    assert len(groups) == 3  # one track of each group of near-identical tracks
    top = {r["id"]: r["top"] for r in site.get("/api/queue", params={"n": 3}).json()["rows"]}
    site.post("/api/label", json={"id": first[0], "tags": [top[first[0]]]}, headers=site.token).raise_for_status()
    assert [r["id"] for r in site.get("/api/queue", params={"n": 3}).json()["rows"]] == first[1:]  # the rest of the round
    site.post("/api/undo", json={}, headers=site.token).raise_for_status()
    assert [r["id"] for r in site.get("/api/queue", params={"n": 3}).json()["rows"]] == first  # undone: back in the round
    for i in first:
        site.post("/api/label", json={"id": i, "tags": [top[i]]}, headers=site.token).raise_for_status()
    after = [r["id"] for r in site.get("/api/queue", params={"n": 3}).json()["rows"]]
    assert len(after) == 3 and not set(after) & set(first)  # the round done: the next one
    fresh = site.get("/api/queue", params={"n": 3, "fresh": 1}).json()["rows"]
    assert len(fresh) == 3 and not any(r["example"] for r in fresh)


# --------------------------------------------------------------------------- export
def test_export_file_tags_dry_run_lists_then_writes_on_confirmation(site):
    from clapknn.players import read_tags

    plan = site.post("/api/export/filetags", json={"dry_run": True}, headers=site.token).json()
    assert plan["dry_run"] and plan["counts"] == {"planned": 12}
    target = site.root / "library" / "calmish" / "c0.wav"
    entry = next(c for c in plan["changes"] if c["path"] == str(target))
    assert entry["after"] == ["calm"] and "would set mood" in entry["what"]
    assert read_tags(target) == []  # a dry run writes nothing
    done = site.post("/api/export/filetags", json={"dry_run": False}, headers=site.token).json()
    assert done["counts"] == {"written": 12}
    assert read_tags(target) == ["calm"]


def test_export_csv_is_the_tag_table(site):
    import io

    import pandas as pd

    r = site.get("/api/export/csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(r.text))
    assert list(table.columns) == ["path", "tags", "top", "score", "n_snippets", "score:calm", "score:energetic"]
    assert len(table) == 12 and set(table["top"]) <= {"calm", "energetic"}


def test_export_playlists_stay_inside_the_library(site):
    from clapknn.players import read_m3u8

    r = site.post("/api/export/playlists", json={"folder": "Playlists"}, headers=site.token).json()
    assert {p["name"] for p in r["playlists"]} == {"calm", "energetic"}
    calm = read_m3u8(site.root / "library" / "Playlists" / "calm.m3u8")
    assert len(calm) == sum(1 for t in tops(site).values() if t == "calm")
    for folder in ("../out", "/tmp/x"):
        bad = site.post("/api/export/playlists", json={"folder": folder}, headers=site.token)
        assert bad.status_code == 400
    assert not (site.root / "out").exists()


# --------------------------------------------------------------------------- missing index or library
@pytest.mark.parametrize("missing", ["index", "library"])
def test_a_missing_index_or_library_gives_a_clear_page(built, tmp_path, missing):
    from starlette.testclient import TestClient

    from clapknn.webapp.app import create_app
    from clapknn.webapp.session import Curator

    index = tmp_path / "nothing" if missing == "index" else built / "index"
    library = tmp_path / "nothing" if missing == "library" else built / "library"
    curator = Curator(index, library, cache=False)
    curator.start(background=False)
    client = TestClient(create_app(curator, allowed_hosts=["testserver"]))
    s = client.get("/api/status").json()
    assert s["state"] == "error"
    assert ("clapknn build" in s["error"]) if missing == "index" else ("no music folder" in s["error"])
    assert client.get("/").status_code == 200
    r = client.get("/api/tracks")
    assert r.status_code == 400 and r.json()["error"] == s["error"]


def test_serve_command_checks_its_settings_before_starting(capsys):
    from clapknn.cli import main

    assert main(["serve", "--index", "x", "--library", "y", "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clapknn: error: port")
    assert main(["serve", "--index", "x", "--library", "y", "-k", "0"]) == 2
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        capsys.readouterr()
        assert main(["serve", "--index", "x", "--library", "y", "--port", str(busy.getsockname()[1])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot listen on 127.0.0.1" in err[0]
