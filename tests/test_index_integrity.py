"""Index integrity: tampering and truncation are caught on load with a clear message; concurrent
saves cannot corrupt an index; a save or a build killed at any moment leaves a loadable index (the
previous one, or the new one once it is wholly in place).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from clapknn.cli import main
from clapknn.errors import IndexFormatError
from clapknn.index import INDEX_FILE, MANIFEST_FILE, METADATA_FILE, Index

from conftest import make_examples

ENV = dict(os.environ, HF_HUB_OFFLINE="1")

# Makes the same index in the test and in child processes: ``make(seed, n)``.
_MAKE = textwrap.dedent(
    """
    import numpy as np
    import pandas as pd
    from clapknn.index import Index

    def make(seed, n=64, dim=16):
        rng = np.random.default_rng(seed)
        tags = [("a",) if i % 2 else ("b", "c") for i in range(n)]
        meta = pd.DataFrame({"path": [f"s{seed}/f{i}.wav" for i in range(n)], "start": 0.0, "end": 10.0,
                             "tags": tags, "sha256": "0" * 64, "kind": "audio"})
        enc = {"name": "test", "sample_rate": 16000, "dim": dim}
        return Index.from_arrays(rng.standard_normal((n, dim)).astype("float32"), meta, encoder=enc,
                                 snippet_seconds=10.0, hop_seconds=10.0, extra={"seed": seed})
    """
)
_ns: dict = {}
exec(_MAKE, _ns)
make = _ns["make"]


def _same(loaded: Index, seed: int, n: int = 64, dim: int = 16) -> bool:
    return loaded.manifest.get("seed") == seed and np.array_equal(loaded.vectors, make(seed, n, dim).vectors)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or p.name.endswith(".previous"))


# --------------------------------------------------------------------------- tampering
def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_manifest(**changes):
    def edit(d: Path) -> None:
        m = json.loads((d / MANIFEST_FILE).read_text())
        for key, value in changes.items():
            if value is KeyError:
                m.pop(key)
            else:
                m[key] = value(m) if callable(value) else value
        (d / MANIFEST_FILE).write_text(json.dumps(m))

    return edit


TAMPERING = {
    "faiss byte flipped": (lambda d: _flip_byte(d / INDEX_FILE), r"index\.faiss: checksum mismatch"),
    "faiss truncated": (lambda d: _truncate(d / INDEX_FILE), r"index\.faiss: checksum mismatch"),
    "faiss emptied": (lambda d: (d / INDEX_FILE).write_bytes(b""), r"index\.faiss: checksum mismatch"),
    "parquet byte flipped": (lambda d: _flip_byte(d / METADATA_FILE), r"metadata\.parquet: checksum mismatch"),
    "parquet truncated": (lambda d: _truncate(d / METADATA_FILE), r"metadata\.parquet: checksum mismatch"),
    "parquet grown": (lambda d: open(d / METADATA_FILE, "ab").write(b"\0" * 10), r"checksum mismatch"),
    "faiss deleted": (lambda d: (d / INDEX_FILE).unlink(), r"missing index\.faiss"),
    "parquet deleted": (lambda d: (d / METADATA_FILE).unlink(), r"missing metadata\.parquet"),
    "manifest deleted": (lambda d: (d / MANIFEST_FILE).unlink(), r"not a clapknn index \(no manifest\.json\)"),
    "manifest truncated": (lambda d: _truncate(d / MANIFEST_FILE), r"unreadable manifest"),
    "manifest not JSON": (lambda d: (d / MANIFEST_FILE).write_bytes(b"\xff\xfe garbage"), r"unreadable manifest"),
    "manifest a list": (lambda d: (d / MANIFEST_FILE).write_text("[1, 2]"), r"not a JSON object"),
    "format version": (_edit_manifest(format_version=2), r"format version 2 is not supported"),
    "no checksums": (_edit_manifest(checksums=KeyError), r"manifest lacks checksums"),
    "checksums emptied": (_edit_manifest(checksums={}), r"no checksum for index\.faiss"),
    "checksum of other data": (
        _edit_manifest(checksums=lambda m: {**m["checksums"], METADATA_FILE: "0" * 64}), r"checksum mismatch"
    ),
    "vector count": (_edit_manifest(n_vectors=lambda m: m["n_vectors"] + 1), r"inconsistent index"),
    "dimension": (_edit_manifest(dim=8), r"inconsistent index"),
    "count as text": (_edit_manifest(n_vectors="64"), r"wrong type: n_vectors"),
    "encoder not a mapping": (_edit_manifest(encoder="features"), r"wrong type: encoder"),
    "tags renamed": (_edit_manifest(tags=["a", "b", "happy"]), r"manifest lists tags .* metadata holds"),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("integrity") / "idx"
    make(1).save(path)
    return path


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_index_is_refused_with_a_clear_message(saved, tmp_path, case, capsys):
    tamper, message = TAMPERING[case]
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    tamper(copy)
    with pytest.raises(IndexFormatError, match=message):
        Index.load(copy)
    # the CLI says the same in one line, exit code 2, no traceback
    assert main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clapknn: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_untouched_copy_loads(saved, tmp_path):
    shutil.copytree(saved, tmp_path / "copy")
    assert _same(Index.load(tmp_path / "copy"), 1)


def test_loading_reads_parquet_without_arrows_dataset_scanner(saved, monkeypatch):
    """Index files are read in the calling thread: pandas' reader and
    ``pyarrow.parquet.read_table`` go through Arrow's dataset scanner, whose threads can abort a
    process that exits right after reading (as ``clapknn build``, which reads its index back, does)."""
    import pandas as pd
    import pyarrow.parquet as pq

    def refused(*args, **kwargs):
        raise AssertionError("the dataset scanner was used")

    monkeypatch.setattr(pd, "read_parquet", refused)
    monkeypatch.setattr(pq, "read_table", refused)
    assert _same(Index.load(saved), 1)


@pytest.mark.parametrize("what", ["a file", "a dangling link"])
def test_index_path_that_is_not_a_directory(tmp_path, what):
    target = tmp_path / "idx"
    if what == "a file":
        target.write_text("x")
        match = "not an index directory"
    else:
        os.symlink(tmp_path / "gone", target)
        match = "no such index directory"
    with pytest.raises(IndexFormatError, match=match):
        Index.load(target)


def test_save_over_a_file_is_refused(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(IndexFormatError, match="not a directory; refusing to overwrite"):
        make(1).save(target)
    assert target.read_text() == "keep me" and _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- concurrency
_WRITER = _MAKE + textwrap.dedent(
    """
    import sys
    path, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    index = make(seed)
    for _ in range(rounds):
        index.save(path)
    """
)

_READER = textwrap.dedent(
    """
    import os, sys
    from clapknn.index import Index
    path, stop = sys.argv[1], sys.argv[2]
    loads, seeds = 0, set()
    while True:   # until the writers are done (at least one load)
        done = os.path.exists(stop)
        seeds.add(Index.load(path).manifest["seed"])   # any error fails the process
        loads += 1
        if done:
            break
    print(loads, " ".join(map(str, sorted(seeds))))
    """
)


def test_concurrent_saves_and_loads_never_see_a_broken_index(tmp_path):
    """Four processes save different indexes to one directory at once while a fifth loads it in a
    loop until they are done: every load succeeds and sees one whole index (the first or a
    writer's), and the survivor is one writer's index, whole. How many loads overlap the saves
    depends on the machine's load, so it is not asserted."""
    path = tmp_path / "shared"
    stop = tmp_path / "writers-done"
    make(0).save(path)
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(path), str(stop)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(seed), "15"], env=ENV, stderr=subprocess.PIPE)
        for seed in (1, 2, 3, 4)
    ]
    for w in writers:
        assert w.wait(timeout=600) == 0, w.stderr.read().decode()
        w.stderr.close()
    stop.touch()
    out, err = reader.communicate(timeout=600)
    assert reader.returncode == 0, err
    loads, *seeds = out.split()
    assert int(loads) >= 1 and set(map(int, seeds)) <= {0, 1, 2, 3, 4}
    final = Index.load(path)
    assert final.manifest["seed"] in (1, 2, 3, 4) and _same(final, final.manifest["seed"])
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- killed saves
_KILL_AT = _MAKE + textwrap.dedent(
    """
    import os, shutil, sys
    import clapknn.store as ix

    path, point = sys.argv[1], sys.argv[2]
    calls = {"rename": 0}
    real_rename, real_rmtree, real_sha = os.rename, shutil.rmtree, ix.file_sha256

    def die():
        os._exit(137)   # as abrupt as SIGKILL: no finally blocks, no cleanup

    def rename(src, dst):
        calls["rename"] += 1
        if point == "before-first-rename" and calls["rename"] == 1:
            die()
        real_rename(src, dst)
        if point == "between-renames" and calls["rename"] == 1:
            die()
        if point == "after-second-rename" and calls["rename"] == 2:
            die()

    def sha(p):
        if point == "while-checksumming":
            die()
        return real_sha(p)

    ix.os.rename, ix.file_sha256 = rename, sha
    make(2).save(path)
    """
)

KILL_POINTS = {
    # point: seed that must load afterwards (1: the previous index, 2: the new one)
    "while-checksumming": 1,
    "before-first-rename": 1,
    "between-renames": 1,
    "after-second-rename": 2,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_save_killed_at_each_step_leaves_a_loadable_index(tmp_path, point):
    """A save killed at each of its steps: the directory loads (old or new, whole), and the next
    save recovers and cleans up whatever the killed one left behind."""
    path = tmp_path / "idx"
    make(1).save(path)
    run = subprocess.run([sys.executable, "-c", _KILL_AT, str(path), point], env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 137, run.stderr
    assert _same(Index.load(path), KILL_POINTS[point])
    if point == "between-renames":
        assert not path.exists() and (tmp_path / ".idx.previous").is_dir()  # load used the kept copy
    make(3).save(path)
    assert _same(Index.load(path), 3) and _leftovers(tmp_path) == []


_SAVE_LOOP = _MAKE + textwrap.dedent(
    """
    import sys
    path = sys.argv[1]
    big = [make(seed, n=20000, dim=64) for seed in (5, 6)]
    print("ready", flush=True)
    i = 0
    while True:
        big[i % 2].save(path)
        i += 1
    """
)


def test_save_loop_killed_at_random_moments(tmp_path):
    """SIGKILL lands at random points of back-to-back saves of a 5 MB index; after every kill the
    directory loads as one of the two indexes, whole."""
    path = tmp_path / "idx"
    make(5, n=20000, dim=64).save(path)
    rnd = random.Random(0)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP, str(path)], env=ENV, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=600)
        proc.stdout.close()
        loaded = Index.load(path)
        assert loaded.manifest["seed"] in (5, 6) and _same(loaded, loaded.manifest["seed"], n=20000, dim=64)
    make(7).save(path)
    assert _same(Index.load(path), 7) and _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- killed and concurrent builds
@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    return make_examples(tmp_path_factory.mktemp("ex") / "examples", per_tag=3, seconds=12.0)


_BUILD_STOPPED_WHILE_IT_EMBEDS = textwrap.dedent(
    """
    import sys, threading
    from clapknn.cli import main
    from clapknn.encoders.features import FeaturesEncoder

    embed = FeaturesEncoder.embed

    def announced(self, x):
        print("embedding", flush=True)
        threading.Event().wait()   # held here until killed: the kill lands mid-build, every time
        return embed(self, x)

    FeaturesEncoder.embed = announced
    sys.exit(main(sys.argv[1:]))
    """
)


def test_build_killed_mid_way_keeps_the_previous_index(examples, tmp_path):
    """``clapknn build`` killed while it embeds: the previous index is untouched, byte for byte."""
    out = tmp_path / "idx"
    assert main(["build", str(examples), "--out", str(out), "--snippet-seconds", "4", "-q"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # --workers 0: the encoder held by the script runs in this process, not in worker processes
    args = ["build", str(examples), "--out", str(out), "--snippet-seconds", "1", "--batch-size", "1", "-q", "--workers", "0"]
    proc = subprocess.Popen([sys.executable, "-c", _BUILD_STOPPED_WHILE_IT_EMBEDS, *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "embedding"  # the first of 72 snippets
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=600)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert Index.load(out).snippet_seconds == 4.0
    # the next build goes through and leaves nothing behind
    assert main(["build", str(examples), "--out", str(out), "--snippet-seconds", "3", "-q"]) == 0
    assert Index.load(out).snippet_seconds == 3.0 and _leftovers(tmp_path) == []


def test_two_builds_to_one_directory_at_once(examples, tmp_path):
    """Two ``clapknn build`` runs racing to the same --out: both finish, the result is one of them."""
    out = tmp_path / "idx"
    procs = [
        subprocess.Popen([sys.executable, "-m", "clapknn", "build", str(examples), "--out", str(out),
                          "--snippet-seconds", str(s), "-q"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for s in (3, 4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    index = Index.load(out)
    assert index.snippet_seconds in (3.0, 4.0)
    assert len(index) == 6 * (12 // int(index.snippet_seconds))
    assert _leftovers(tmp_path) == []
