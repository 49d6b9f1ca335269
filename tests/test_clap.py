"""The CLAP encoder on random weights of the real architecture (HTSAT-tiny; one HTSAT-base build).

Random weights map every input to nearly the same vector, so these tests check loading, offline
behaviour, shapes, normalisation, determinism and batch invariance, and agreement with
laion-clap's own code on the same weights: not tagging quality.

Tolerances: the same snippet in any batch gives vectors within 1e-5 (max abs, unit vectors) of
each other; clapknn's lean forward agrees with laion-clap's ``get_audio_embedding_from_data`` to
1e-5; reloading a checkpoint gives bit-identical vectors.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("laion_clap") is None:
    pytest.skip("the CLAP encoder needs torch and laion-clap", allow_module_level=True)

from clapknn.encoders import clap as clapmod
from clapknn.encoders.clap import checkpoints as clapckpt, encoder as clapenc, forward as clapfwd, laion as claplaion
from clapknn.errors import AudioError, CheckpointError, ParameterError

ROOT = Path(__file__).resolve().parents[1]


def _load_bench_helper():
    """bench/make_random_checkpoint.py, imported by path (bench/ is no package; not put on sys.path)."""
    spec = importlib.util.spec_from_file_location("clapknn_bench_make_random_checkpoint", ROOT / "bench" / "make_random_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_random_checkpoint = _load_bench_helper().write_random_checkpoint

N = clapmod.CLIP_SAMPLES
BATCH_TOL = 1e-5
LAION_TOL = 1e-5


def _signals(n: int = 4, length: int = N, seed: int = 0) -> np.ndarray:
    """Distinct, deterministic test snippets: tones, noise, a chirp, silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / clapmod.CLAP_SAMPLE_RATE
    rows = [
        0.3 * np.sin(2 * np.pi * 440 * t),
        rng.uniform(-0.5, 0.5, length),
        0.4 * np.sin(2 * np.pi * (100 + 400 * t) * t),
        0.2 * np.sign(np.sin(2 * np.pi * 2 * t)) * rng.standard_normal(length),
    ]
    return np.stack(rows[:n]).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Fixtures: one random tiny model, written in the official layout, loaded once per module.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """The same random HTSAT-tiny weights written with and without ``position_ids``, plus the
    vectors the in-memory model gives before saving."""
    import torch

    folder = tmp_path_factory.mktemp("clap_ckpt")
    torch.manual_seed(1234)
    model, cfg = clapmod.build_model("HTSAT-tiny", text=True)
    with torch.inference_mode():
        fwd = clapfwd.AudioForward(model, cfg, fusion=False)
        x = torch.from_numpy(clapfwd.prepare_snippets(_signals()))
        reference = fwd(x).numpy()  # one batch of 4, as the encoder fixture runs it
    with_pos = clapmod.save_checkpoint(model, folder / "tiny.pt", position_ids=True)
    without_pos = clapmod.save_checkpoint(model, folder / "tiny_nopos.pt", position_ids=False)
    del model
    return {"with_pos": with_pos, "without_pos": without_pos, "reference": reference}


@pytest.fixture(scope="module")
def encoder(ckpts):
    return clapmod.ClapEncoder(ckpts["with_pos"], device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def laion_module(ckpts):
    """laion-clap's own CLAP_Module on the same file, loaded by its own load_ckpt."""
    import contextlib
    import io

    lc = claplaion._import_laion_clap()
    with claplaion._laion_guard(claplaion.roberta_model):
        module = lc.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        module.load_ckpt(str(ckpts["with_pos"]), verbose=False)
    return module


def _byte_level_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's mapping)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer in roberta-base's file format (special ids 0-3 as roberta)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in _byte_level_chars():
        vocab.setdefault(ch, len(vocab))
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


# ------------------------------------------------------------------------------------------------
# Import and construction stay offline and leave nothing patched
# ------------------------------------------------------------------------------------------------


def _run_python(code: str, env_extra: dict | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)


_BLOCK_NETWORK = r"""
import socket, sys
attempts = []
def _refuse(name):
    def f(*a, **k):
        attempts.append((name, repr(a)[:120]))
        raise OSError("network blocked by test")
    return f
socket.socket.connect = _refuse("connect")
socket.socket.connect_ex = _refuse("connect_ex")
socket.create_connection = _refuse("create_connection")
socket.getaddrinfo = _refuse("getaddrinfo")
import huggingface_hub, huggingface_hub.file_download
for name in ("hf_hub_download", "snapshot_download", "model_info"):
    stub = _refuse("huggingface_hub." + name)
    setattr(huggingface_hub, name, stub)
    if hasattr(huggingface_hub.file_download, name):
        setattr(huggingface_hub.file_download, name, stub)
"""


def test_import_is_instant_and_offline():
    code = _BLOCK_NETWORK + r"""
import clapknn, clapknn.encoders, clapknn.encoders.clap, clapknn.cli
heavy = [m for m in ("torch", "laion_clap", "transformers", "clap_module") if m in sys.modules]
print("HEAVY", heavy)
print("ATTEMPTS", attempts)
"""
    res = _run_python(code, drop=("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout
    assert "ATTEMPTS []" in res.stdout, res.stdout


def test_construction_offline_no_hub_call_no_leftover_patches(ckpts, encoder, tmp_path):
    """Import laion_clap and build + run the encoder with the network blocked and HF_HUB_OFFLINE
    unset: no connection attempt, no hub function called, nothing left patched, and the vectors
    equal this process's (determinism across runs)."""
    out = tmp_path / "vectors.npy"
    sig = tmp_path / "signals.npy"
    np.save(sig, _signals())
    code = _BLOCK_NETWORK + rf"""
import numpy as np
from transformers import BertTokenizer, RobertaTokenizer, BartTokenizer, RobertaModel
before = {{c.__name__: c.__dict__.get("from_pretrained") for c in (BertTokenizer, RobertaTokenizer, BartTokenizer, RobertaModel)}}
path_before = list(sys.path)
from clapknn.encoders import get_encoder
enc = get_encoder("clap", checkpoint={str(ckpts['with_pos'])!r}, device="cpu", batch_size=4)
np.save({str(out)!r}, enc.embed(np.load({str(sig)!r})))
after = {{c.__name__: c.__dict__.get("from_pretrained") for c in (BertTokenizer, RobertaTokenizer, BartTokenizer, RobertaModel)}}
print("PATCHED", [k for k in before if before[k] is not after[k]])
print("TORCHVISION", "torchvision" in sys.modules)
print("SYSPATH", [p for p in sys.path if p not in path_before])
print("ATTEMPTS", attempts)
"""
    res = _run_python(code, env_extra={"HF_HOME": str(tmp_path / "hf")}, drop=("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ATTEMPTS []" in res.stdout, res.stdout
    assert "PATCHED []" in res.stdout, res.stdout
    assert "TORCHVISION False" in res.stdout, res.stdout
    assert "SYSPATH []" in res.stdout, res.stdout
    np.testing.assert_allclose(np.load(out), ckpts["reference"], rtol=0, atol=1e-6)


def test_nothing_written_into_site_packages(encoder):
    import laion_clap

    pkg = Path(laion_clap.__file__).parent
    assert not list(pkg.glob("*.pt")), "a checkpoint was written into site-packages"


# ------------------------------------------------------------------------------------------------
# Loading the official layout
# ------------------------------------------------------------------------------------------------


def test_official_layout_roundtrip_is_exact_and_repeatable(ckpts, encoder):
    np.testing.assert_array_equal(encoder.embed(_signals()), ckpts["reference"])
    np.testing.assert_array_equal(encoder.embed(_signals()), ckpts["reference"])


def test_checkpoint_without_position_ids_loads(ckpts, encoder):
    enc = clapmod.ClapEncoder(ckpts["without_pos"], device="cpu", batch_size=4)
    np.testing.assert_array_equal(enc.embed(_signals()), ckpts["reference"])
    assert enc.identity()["checkpoint_sha256"] != encoder.identity()["checkpoint_sha256"]


def test_matches_laion_clap_pipeline(encoder, laion_module):
    x = _signals()
    theirs = laion_module.get_audio_embedding_from_data(x)
    np.testing.assert_allclose(encoder.embed(x), theirs, rtol=0, atol=LAION_TOL)
    short = x[:, : N // 3 + 7]  # repeat-padded the same way on both sides
    np.testing.assert_allclose(encoder.embed(short), laion_module.get_audio_embedding_from_data(short), rtol=0, atol=LAION_TOL)


def test_lean_forward_equals_laion_forward_on_perturbed_weights():
    """Scale the weights and randomise the relative-position biases so that every part of the
    network (window attention, shift masks, merging) visibly changes the output; the lean forward
    must still agree with laion-clap's forward on the very same module."""
    import torch

    torch.manual_seed(7)
    model, cfg = clapmod.build_model("HTSAT-tiny")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.audio_branch.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 2)
            elif p.dim() >= 2 and "extractor" not in name:
                p.mul_(3.0)
    x = torch.from_numpy(clapfwd.prepare_snippets(_signals(4)))
    with torch.inference_mode():
        ours = clapfwd.AudioForward(model, cfg, fusion=False)(x)
        theirs = model.get_audio_embedding([{"waveform": w, "longer": torch.tensor([False])} for w in x])
    spread = 1 - (theirs @ theirs.T).min().item()
    assert spread > 100 * LAION_TOL  # inputs are told apart, so agreement below means something
    assert (ours - theirs).abs().max().item() < LAION_TOL


def test_fusion_model_on_10s_snippets():
    """Fusion checkpoints see four copies of one 10-s mel computed with an HTK filterbank (what
    laion-clap builds with torchaudio, which is not installed): the filterbank matches librosa's
    HTK one, and the lean forward matches laion-clap's fusion forward fed that mel."""
    import librosa
    import torch

    fb = clapfwd._htk_mel_filterbank(48000, 1024, 64, 50, 14000).numpy()
    ref = librosa.filters.mel(sr=48000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, htk=True, norm=None).T
    np.testing.assert_allclose(fb, ref, rtol=0, atol=1e-5)

    torch.manual_seed(3)
    model, cfg = clapmod.build_model("HTSAT-tiny", enable_fusion=True)
    state = dict(model.state_dict())
    assert clapckpt.detect_architecture(state, "x")["fusion"] is True
    fwd = clapfwd.AudioForward(model, cfg, fusion=True)
    x = torch.from_numpy(clapfwd.prepare_snippets(_signals(2)))
    with torch.inference_mode():
        ours = fwd(x)
        mel = fwd.logmel(x)[:, 0]  # (B, T, 64)
        theirs = model.get_audio_embedding(
            [{"mel_fusion": torch.stack([m] * 4), "longer": torch.tensor([False]), "waveform": w} for m, w in zip(mel, x)]
        )
    assert ours.shape == (2, 512)
    assert (ours - theirs).abs().max().item() < LAION_TOL


def test_htsat_base_builds_and_embeds():
    import torch

    torch.manual_seed(0)
    model, cfg = clapmod.build_model("HTSAT-base")
    assert model.audio_branch.patch_embed.proj.weight.shape[0] == 128
    assert len(model.audio_branch.layers[2].blocks) == 12
    with torch.inference_mode():
        v = clapfwd.AudioForward(model, cfg, fusion=False)(torch.from_numpy(clapfwd.prepare_snippets(_signals(1))))
    assert v.shape == (1, 512)
    state = {k: v for k, v in model.state_dict().items()}
    assert clapckpt.detect_architecture(state, "x")["amodel"] == "HTSAT-base"


# ------------------------------------------------------------------------------------------------
# Determinism, batch invariance, shapes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_size_invariance(ckpts, encoder, batch_size):
    old = encoder.batch_size
    try:
        encoder.batch_size = batch_size
        got = encoder.embed(_signals())
    finally:
        encoder.batch_size = old
    assert np.abs(got - ckpts["reference"]).max() < BATCH_TOL


def test_batch_composition_invariance(ckpts, encoder):
    x = _signals()
    others = _signals(4, seed=99)[[1, 3]]
    mixed = np.concatenate([others[:1], x[::-1], others[1:]])
    got = encoder.embed(mixed)[1:5][::-1]
    assert np.abs(got - ckpts["reference"]).max() < BATCH_TOL


def test_shape_dtype_normalisation(ckpts, encoder):
    v = encoder.embed(_signals(1))
    assert v.shape == (1, 512) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ckpts["reference"], axis=1), 1.0, atol=1e-5)
    assert encoder.embed(np.zeros((0, N), np.float32)).shape == (0, 512)
    assert (encoder.name, encoder.sample_rate, encoder.dim) == ("clap", 48000, 512)


def test_short_snippets_are_repeat_padded(encoder):
    x = _signals(2, length=N // 4 + 1000)  # 3 whole copies fit, then zeros
    padded = np.zeros((2, N), np.float32)
    reps = N // x.shape[1]
    padded[:, : reps * x.shape[1]] = np.tile(x, (1, reps))
    assert np.abs(encoder.embed(x) - encoder.embed(padded)).max() < BATCH_TOL


def test_bad_snippets(encoder):
    with pytest.raises(ParameterError, match="at most 480000"):
        encoder.embed(np.zeros((1, N + 1), np.float32))
    with pytest.raises(ParameterError, match="2-D"):
        encoder.embed(np.zeros(N, np.float32))
    bad = np.zeros((1, 1000), np.float32)
    bad[0, 3] = np.nan
    with pytest.raises(AudioError):
        encoder.embed(bad)


def test_identity(ckpts, encoder):
    ident = encoder.identity()
    digest = hashlib.sha256(Path(ckpts["with_pos"]).read_bytes()).hexdigest()
    assert ident["checkpoint_sha256"] == digest
    assert ident["checkpoint"] == str(Path(ckpts["with_pos"]).resolve())
    assert ident["checkpoint_path"] == str(Path(ckpts["with_pos"]).resolve())
    assert (ident["amodel"], ident["fusion"], ident["name"], ident["dim"]) == ("HTSAT-tiny", False, "clap", 512)
    json.dumps(ident)


# ------------------------------------------------------------------------------------------------
# Error paths
# ------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        clapmod.ClapEncoder(str(tmp_path / "nope.pt"))


def test_named_checkpoint_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        clapmod.ClapEncoder(cache_dir=tmp_path, allow_download=True)
    msg = str(info.value)
    assert "music_audioset_epoch_15_esc_90.14" in msg
    assert str(tmp_path / "music_audioset_epoch_15_esc_90.14.pt") in msg
    assert "https://huggingface.co/lukewys/laion_clap/resolve/main/music_audioset_epoch_15_esc_90.14.pt" in msg
    assert "offline" in msg


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv(clapckpt.ENV_CACHE, str(tmp_path / "c"))
    assert clapmod.cache_dir() == tmp_path / "c"
    with pytest.raises(CheckpointError, match=str(tmp_path / "c")):
        clapmod.resolve_checkpoint("630k-best")


def test_unknown_name():
    with pytest.raises(CheckpointError, match="official names: music_audioset_epoch_15_esc_90.14"):
        clapmod.ClapEncoder("not-a-checkpoint")


def test_wrong_architecture(ckpts):
    with pytest.raises(CheckpointError, match="holds an HTSAT-tiny audio encoder, but amodel='HTSAT-base'"):
        clapmod.ClapEncoder(ckpts["with_pos"], amodel="HTSAT-base")
    with pytest.raises(CheckpointError, match="non-fusion"):
        clapmod.ClapEncoder(ckpts["with_pos"], enable_fusion=True)


def test_corrupt_files(ckpts, tmp_path):
    truncated = tmp_path / "truncated.pt"
    with open(ckpts["with_pos"], "rb") as src:
        truncated.write_bytes(src.read(1 << 20))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 100)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(CheckpointError, match=str(path.name)):
            clapmod.ClapEncoder(path)


def test_not_a_clap_checkpoint(tmp_path):
    import torch

    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"module.encoder.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(CheckpointError, match="not a LAION-CLAP checkpoint"):
        clapmod.ClapEncoder(path)


class _Opaque:
    """Something only full unpickling can restore."""


def test_weights_only_refusal_and_trust(tmp_path, monkeypatch):
    import torch

    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "extra": _Opaque()}, path)
    with pytest.raises(CheckpointError, match=clapckpt.ENV_TRUST):
        clapmod.read_checkpoint(path)
    monkeypatch.setenv(clapckpt.ENV_TRUST, "1")
    assert set(clapmod.read_checkpoint(path)) == {"x"}


def test_architecture_mismatch_inside_file(ckpts, tmp_path):
    """A file whose weights do not fit the model they claim: a clear error, no laion traceback."""
    import torch

    state = clapmod.read_checkpoint(ckpts["with_pos"])
    state["audio_branch.layers.0.blocks.0.attn.qkv.weight"] = torch.zeros(5, 5)
    del state["audio_branch.norm.weight"]
    path = tmp_path / "broken.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointError, match="does not fit the CLAP model"):
        clapmod.ClapEncoder(path)


# ------------------------------------------------------------------------------------------------
# Named checkpoints: cache and download
# ------------------------------------------------------------------------------------------------


class _Server:
    """Serves one file over HTTP on localhost and counts the requests."""

    def __init__(self, path: Path, etag: str | None = None) -> None:
        data_path = path
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                counter.requests += 1
                size = data_path.stat().st_size
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                if etag:
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                self.end_headers()
                with open(data_path, "rb") as fh:
                    while block := fh.read(1 << 22):
                        self.wfile.write(block)

            def log_message(self, *args):
                pass

        self.requests = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_once_verify_and_reuse(ckpts, tmp_path, monkeypatch):
    digest = hashlib.sha256(Path(ckpts["with_pos"]).read_bytes()).hexdigest()
    server = _Server(Path(ckpts["with_pos"]), etag=digest)
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("CLAPKNN_OFFLINE", raising=False)
        monkeypatch.setenv(clapckpt.ENV_BASE_URL, server.url)
        monkeypatch.setenv(clapckpt.ENV_CACHE, str(tmp_path / "cache"))
        # without permission: the clear error, no request
        with pytest.raises(CheckpointError, match="630k-audioset-best.pt"):
            clapmod.resolve_checkpoint("630k-audioset-best")
        assert server.requests == 0
        enc = clapmod.ClapEncoder("630k-audioset-best", allow_download=True, device="cpu")
        assert server.requests == 1
        cached = tmp_path / "cache" / "630k-audioset-best.pt"
        assert cached.is_file() and not list(cached.parent.glob("*.part"))
        ident = enc.identity()
        assert ident["checkpoint"] == "630k-audioset-best" and ident["checkpoint_sha256"] == digest
        np.testing.assert_array_equal(enc.embed(_signals()), ckpts["reference"])
        again = clapmod.resolve_checkpoint("630k-audioset-best.pt", allow_download=True)
        assert again[0] == cached and server.requests == 1
    finally:
        server.close()


def test_download_rejects_corrupt_file(ckpts, tmp_path, monkeypatch):
    server = _Server(Path(ckpts["with_pos"]), etag="0" * 64)
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("CLAPKNN_OFFLINE", raising=False)
        monkeypatch.setenv(clapckpt.ENV_BASE_URL, server.url)
        with pytest.raises(CheckpointError, match="corrupt"):
            clapmod.download_checkpoint("630k-best", cache=tmp_path)
        assert not list(tmp_path.iterdir())
        # a file of the wrong architecture under an official name is refused too
        server.close()
        server = _Server(Path(ckpts["with_pos"]))
        monkeypatch.setenv(clapckpt.ENV_BASE_URL, server.url)
        with pytest.raises(CheckpointError, match="expected HTSAT-base"):
            clapmod.download_checkpoint("music_speech_epoch_15_esc_89.25", cache=tmp_path)
        assert not list(tmp_path.iterdir())
    finally:
        server.close()


def test_registry():
    specs = clapmod.CHECKPOINTS
    assert clapmod.DEFAULT_CHECKPOINT == "music_audioset_epoch_15_esc_90.14"
    assert (specs["music_audioset_epoch_15_esc_90.14"].amodel, specs["music_audioset_epoch_15_esc_90.14"].fusion) == ("HTSAT-base", False)
    for name in ("music_speech_epoch_15_esc_89.25", "music_speech_audioset_epoch_15_esc_89.98"):
        assert specs[name].amodel == "HTSAT-base" and not specs[name].fusion
    for name in ("630k-best", "630k-audioset-best"):
        assert specs[name].amodel == "HTSAT-tiny" and not specs[name].fusion
    assert specs["630k-audioset-fusion-best"].fusion
    assert specs["630k-best"].url == "https://huggingface.co/lukewys/laion_clap/resolve/main/630k-best.pt"


# ------------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------------


def test_text_needs_real_tokenizer_files(ckpts, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv(clapckpt.ENV_TOKENIZER, raising=False)
    enc = clapmod.ClapEncoder(ckpts["with_pos"], cache_dir=tmp_path / "cache", device="cpu")
    with pytest.raises(CheckpointError, match="roberta-base tokenizer files") as info:
        enc.embed_text(["a sad song"])
    assert "https://huggingface.co/FacebookAI/roberta-base" in str(info.value)
    # laion-clap's offline "tokenizer" (five special tokens) is refused, not used
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}))
    (fake / "merges.txt").write_text("#version: 0.2\n")
    enc.tokenizer_path = fake
    with pytest.raises(CheckpointError, match="not roberta-base"):
        enc.embed_text(["a sad song"])


def test_audio_only_checkpoint(tmp_path, tokenizer_dir):
    """A checkpoint without the text tower embeds audio; text then fails clearly."""
    path = write_random_checkpoint(tmp_path / "audio_only.pt", amodel="HTSAT-tiny", seed=5, text=False)
    enc = clapmod.ClapEncoder(path, device="cpu", tokenizer_path=tokenizer_dir)
    assert enc.embed(_signals(1)).shape == (1, 512)
    with pytest.raises(CheckpointError, match="no text branch"):
        enc.embed_text(["a sad song"])


def test_text_embeddings(encoder, laion_module, tokenizer_dir):
    encoder.tokenizer_path = tokenizer_dir
    texts = ["a sad, slow song", "a happy upbeat song", "calm"]
    v = encoder.embed_text(texts)
    assert v.shape == (3, 512) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(encoder.embed_text(texts), v)
    assert np.abs(encoder.embed_text(texts[1:2]) - v[1:2]).max() < BATCH_TOL
    # the same as laion-clap's text path with the same tokenizer and weights
    tok = encoder._tokenizer

    def tokenize(batch):
        return tok(batch, padding="max_length", truncation=True, max_length=77, return_tensors="pt")

    theirs = laion_module.get_text_embedding(texts, tokenizer=tokenize)
    np.testing.assert_allclose(v, theirs, rtol=0, atol=LAION_TOL)
    with pytest.raises(ParameterError):
        encoder.embed_text([""])


# ------------------------------------------------------------------------------------------------
# End to end through the CLI
# ------------------------------------------------------------------------------------------------


def test_cli_build_and_tag(ckpts, tokenizer_dir, tmp_path, monkeypatch, capsys):
    """Build a CLAP index (with a text prompt) and tag one of its own examples: with ``-k 1`` the
    nearest vector is the file's own snippet, so its tag must come back (whatever the weights)."""
    import pandas as pd
    import soundfile as sf

    from clapknn.cli import main
    from clapknn.tagging.tagger import load_index

    rng = np.random.default_rng(0)
    examples = tmp_path / "examples"
    for tag, f0 in (("happy", 660.0), ("sad", 220.0)):
        (examples / tag).mkdir(parents=True)
        for i in range(2):
            t = np.arange(44100 * 11) / 44100
            y = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.03 * i) * t) + 0.02 * rng.standard_normal(t.size)
            sf.write(examples / tag / f"{tag}{i}.wav", y.astype(np.float32), 44100)
    index = tmp_path / "index"
    monkeypatch.setenv(clapckpt.ENV_TOKENIZER, str(tokenizer_dir))
    rc = main([
        "build", str(examples), "--encoder", "clap", "--checkpoint", str(ckpts["with_pos"]), "--out", str(index),
        "--prompt", "calm=a calm, quiet piece", "--batch-size", "2", "-q",
    ])
    assert rc == 0, capsys.readouterr().err
    built = capsys.readouterr().out
    assert "encoder clap" in built and "calm" in built
    meta = load_index(index).metadata
    assert sorted(meta["kind"]) == ["audio"] * 4 + ["text"]
    for who in ("happy1.wav", "sad0.wav"):
        out = tmp_path / f"{who}.csv"
        folder = "happy" if who.startswith("happy") else "sad"
        rc = main(["tag", "--index", str(index), str(examples / folder / who), "-k", "1", "--out", str(out), "-q"])
        assert rc == 0, capsys.readouterr().err
        rows = pd.read_csv(out)
        assert len(rows) == 1 and Path(rows["path"][0]).name == who
        assert rows["tags"][0] == folder


def test_cli_checkpoint_given_by_path_is_found_again(ckpts, tmp_path, monkeypatch, capsys, caplog):
    """The README's recipe: ``build --encoder clap --checkpoint PATH`` with a file named like an
    official checkpoint (not in the cache), then ``tag --index`` from another folder finds the file
    by its recorded absolute path; a moved copy is accepted through ``--checkpoint NEWPATH`` (same
    sha256); a different file is refused with one line saying the checkpoint differs."""
    import logging

    import pandas as pd
    import soundfile as sf

    from clapknn.cli import main
    from clapknn.tagging.tagger import load_index

    monkeypatch.setenv(clapckpt.ENV_CACHE, str(tmp_path / "empty-cache"))
    models = tmp_path / "models"
    models.mkdir()
    ckpt = models / "630k-audioset-best.pt"
    os.link(ckpts["with_pos"], ckpt)  # the same bytes under the official file name, without a copy
    examples = tmp_path / "project" / "ex"
    for tag, f0 in (("low", 110.0), ("high", 880.0)):
        (examples / tag).mkdir(parents=True)
        t = np.arange(48000 * 3) / 48000
        sf.write(examples / tag / f"{tag}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 48000)
    monkeypatch.chdir(tmp_path / "project")
    with caplog.at_level(logging.INFO, logger="clapknn.encoders.clap"):
        rc = main(["build", "ex", "--encoder", "clap", "--checkpoint", "../models/630k-audioset-best.pt", "--out", "idx", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert any("loading CLAP model" in r.getMessage() for r in caplog.records)
    ident = load_index(tmp_path / "project" / "idx").encoder_identity
    assert ident["checkpoint_path"] == str(ckpt.resolve())  # absolute, though given relative
    assert ident["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    capsys.readouterr()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    index = str(tmp_path / "project" / "idx")
    query = str(examples / "high" / "high.wav")
    rc = main(["tag", query, "--index", index, "-k", "1", "--out", "a.csv", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert pd.read_csv("a.csv")["tags"].tolist() == ["high"]

    moved = tmp_path / "moved" / "my-copy.pt"
    moved.parent.mkdir()
    ckpt.rename(moved)
    rc = main(["tag", query, "--index", index, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and str(ckpt.resolve()) in err and "--checkpoint" in err
    rc = main(["tag", query, "--index", index, "--checkpoint", str(moved), "-k", "1", "--out", "b.csv", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert pd.read_csv("b.csv")["tags"].tolist() == ["high"]
    # `add` with the moved copy records where the checkpoint is now: later runs need no --checkpoint
    rc = main(["add", index, str(examples / "low" / "low.wav"), "--tag", "low", "--checkpoint", str(moved), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert load_index(index).encoder_identity["checkpoint_path"] == str(moved.resolve())
    rc = main(["tag", query, "--index", index, "-k", "1", "--out", "c.csv", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert pd.read_csv("c.csv")["tags"].tolist() == ["high"]

    capsys.readouterr()
    rc = main(["tag", query, "--index", index, "--checkpoint", str(ckpts["without_pos"]), "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("clapknn: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "differs" in err and str(Path(ckpts["without_pos"]).resolve()) in err


# ------------------------------------------------------------------------------------------------
# Finding a recorded checkpoint again (sha256 = identity, paths = hints); no model is loaded here
# ------------------------------------------------------------------------------------------------


def _fake_file(path: Path, content: bytes) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_locate_checkpoint_order_and_hash(tmp_path):
    given, sha = _fake_file(tmp_path / "given" / "a.pt", b"weights A")
    recorded, _ = _fake_file(tmp_path / "recorded" / "630k-best.pt", b"weights A")
    cache = tmp_path / "cache"
    cached, _ = _fake_file(cache / "630k-best.pt", b"weights A")
    other, _ = _fake_file(tmp_path / "other.pt", b"weights B")
    ident = {"name": "clap", "checkpoint": "630k-best", "checkpoint_path": str(recorded), "checkpoint_sha256": sha}
    # 1. the explicit one; 2. the recorded path; 3. the cache by name
    assert clapmod.locate_checkpoint(ident, given, cache=cache) == given.resolve()
    assert clapmod.locate_checkpoint(ident, cache=cache) == recorded
    recorded.write_bytes(b"weights B")  # the recorded path now holds other weights: skipped
    assert clapmod.locate_checkpoint(ident, cache=cache) == cached
    recorded.unlink()
    assert clapmod.locate_checkpoint(ident, cache=cache) == cached
    # an explicit file with other weights is an error, not a silent fallback
    with pytest.raises(CheckpointError, match="differs from the one this index was built with"):
        clapmod.locate_checkpoint(ident, other, cache=cache)
    # nothing holds the recorded weights: the message says where it looked
    cached.write_bytes(b"weights B")
    with pytest.raises(CheckpointError) as info:
        clapmod.locate_checkpoint(ident, cache=cache)
    msg = str(info.value)
    assert str(recorded) in msg and str(cached) in msg and "--checkpoint" in msg


def test_locate_checkpoint_older_records(tmp_path):
    """Indexes written before ``checkpoint_path`` existed: a path in ``checkpoint``, or a name."""
    path, sha = _fake_file(tmp_path / "mine.pt", b"weights")
    assert clapmod.locate_checkpoint({"checkpoint": str(path), "checkpoint_sha256": sha}) == path
    cached, sha2 = _fake_file(tmp_path / "cache" / "630k-best.pt", b"named")
    assert clapmod.locate_checkpoint({"checkpoint": "630k-best", "checkpoint_sha256": sha2}, cache=tmp_path / "cache") == cached
    with pytest.raises(CheckpointError, match="630k-best.pt"):
        clapmod.locate_checkpoint({"checkpoint": "630k-best", "checkpoint_sha256": sha2}, cache=tmp_path / "nothing")


def test_checkpoint_location_is_no_part_of_the_identity():
    """Same sha256 at another path (or under another name) is the same encoder, for the mismatch
    check and for the embedding cache key; another sha256 is not."""
    from clapknn.embedding.cache import settings_key
    from clapknn.index import describe_mismatch

    a = {"name": "clap", "checkpoint": "630k-best", "checkpoint_path": "/x/630k-best.pt", "checkpoint_sha256": "1" * 64}
    b = {**a, "checkpoint": "/y/copy.pt", "checkpoint_path": "/y/copy.pt"}
    old = {k: v for k, v in a.items() if k != "checkpoint_path"}  # an index from before the path was recorded
    assert describe_mismatch(a, b) == [] and describe_mismatch(old, b) == []
    assert settings_key(a, 10, None) == settings_key(b | {"checkpoint": a["checkpoint"]}, 10, None) == settings_key(old, 10, None)
    diffs = describe_mismatch(a, {**b, "checkpoint_sha256": "2" * 64})
    assert any(d.startswith("checkpoint_sha256:") for d in diffs)


def test_library_similar_resolves_the_checkpoint_the_same_way(encoder, ckpts, tmp_path):
    """``similar`` rebuilds a library's encoder from its identity like ``tag`` does: a given
    checkpoint with other weights is refused (before any model is loaded)."""
    import soundfile as sf

    from clapknn.library import index_library, similar

    t = np.arange(48000 * 2) / 48000
    for name, f0 in (("a", 220.0), ("b", 440.0), ("query", 330.0)):
        sf.write(tmp_path / f"{name}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 48000)
    lib = index_library([tmp_path / "a.wav", tmp_path / "b.wav"], tmp_path / "lib", encoder=encoder, cache=False)
    assert lib.encoder_identity["checkpoint_path"] == str(encoder.checkpoint_path)
    with pytest.raises(CheckpointError, match="differs"):
        similar(tmp_path / "lib", tmp_path / "query.wav", encoder_options={"checkpoint": ckpts["without_pos"]}, cache=False)


def test_loading_notice_on_stderr(capsys):
    with clapenc._loading_notice("loading CLAP model x on cpu", True):
        pass
    assert capsys.readouterr().err.startswith("clapknn: loading CLAP model x on cpu ... done (")
    with clapenc._loading_notice("loading CLAP model x on cpu", False):
        pass
    assert capsys.readouterr().err == ""  # not a terminal / progress off: nothing printed


# ------------------------------------------------------------------------------------------------
# Short tracks: the snippet cutter pads them by CLAP's own rule
# ------------------------------------------------------------------------------------------------


def test_short_track_matches_laion_clap_end_to_end(encoder, laion_module, tmp_path):
    """A 3-s file through decode → snippet → encode equals laion-clap's embedding of the same 3 s
    (laion-clap repeat-pads with whole copies, then zeros)."""
    import soundfile as sf

    from clapknn.embedding.encode import embed_files

    t = np.arange(3 * 48000) / 48000
    y = (0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)
    path = tmp_path / "short.wav"
    sf.write(path, y, 48000, subtype="FLOAT")
    assert encoder.pad == "repeatpad"
    emb = embed_files([path], encoder, snippet_seconds=10.0, cache=False)
    assert emb.vectors.shape == (1, 512)
    theirs = laion_module.get_audio_embedding_from_data(y[None])
    np.testing.assert_allclose(emb.vectors, theirs, rtol=0, atol=LAION_TOL)


# ------------------------------------------------------------------------------------------------
# Reduced precision (opt-in): int8 linear layers, bf16 autocast
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_encoder(ckpts):
    return clapmod.ClapEncoder(ckpts["with_pos"], device="cpu", batch_size=4, precision="int8")


def test_int8_quantises_the_linear_layers(int8_encoder, encoder):
    import torch

    blk = int8_encoder.model.audio_branch.layers[0].blocks[0]
    assert type(blk.attn.qkv).__module__.startswith("torch.ao.nn.quantized")
    assert type(blk.mlp.fc1).__module__.startswith("torch.ao.nn.quantized")
    assert isinstance(encoder.model.audio_branch.layers[0].blocks[0].attn.qkv, torch.nn.Linear)  # fp32 untouched


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_reduced_precision_vectors(ckpts, encoder, int8_encoder, precision):
    enc = int8_encoder if precision == "int8" else clapmod.ClapEncoder(ckpts["with_pos"], device="cpu", batch_size=4, precision="bf16")
    x = _signals()
    ref = encoder.embed(x)
    got = enc.embed(x)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = np.sum(got * ref, axis=1)
    assert cos.min() > 0.9  # the same model, other arithmetic
    assert np.abs(got - ref).max() > 1e-6  # ... and really another arithmetic
    np.testing.assert_array_equal(enc.embed(x), got)  # deterministic


def test_precision_is_part_of_the_identity(ckpts, encoder, int8_encoder):
    from clapknn.encoders import encoder_from_identity

    assert "precision" not in encoder.identity()  # fp32 indexes keep the identity they had
    ident = int8_encoder.identity()
    assert ident["precision"] == "int8"
    rebuilt = encoder_from_identity(ident)
    assert rebuilt.precision == "int8" and rebuilt.identity() == ident
    with pytest.raises(ParameterError, match="precision"):
        clapmod.ClapEncoder(ckpts["with_pos"], device="cpu", precision="fp16")


def test_index_refuses_another_precision(encoder, int8_encoder):
    import pandas as pd

    from clapknn import Tagger
    from clapknn.errors import EncoderMismatchError
    from clapknn.index import Index

    vecs = encoder.embed(_signals())
    meta = pd.DataFrame({"path": [f"{i}.wav" for i in range(len(vecs))], "start": 0.0, "end": 10.0,
                         "tags": [("a",), ("b",)] * (len(vecs) // 2), "sha256": "", "kind": "audio"})
    index = Index.from_arrays(vecs, meta, encoder=encoder.identity(), snippet_seconds=10.0, hop_seconds=10.0)
    Tagger(index, encoder=encoder)  # same precision: fine
    with pytest.raises(EncoderMismatchError, match="precision"):
        Tagger(index, encoder=int8_encoder)
    index8 = Index.from_arrays(vecs, meta, encoder=int8_encoder.identity(), snippet_seconds=10.0, hop_seconds=10.0)
    with pytest.raises(EncoderMismatchError, match="precision"):
        Tagger(index8, encoder=encoder)


def test_precision_option_is_refused_for_features(tmp_path, capsys):
    from clapknn.cli import main
    from conftest import make_examples

    examples = make_examples(tmp_path / "examples", per_tag=1, seconds=3.0)
    code = main(["build", str(examples), "--out", str(tmp_path / "idx"), "--precision", "int8", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "precision" in err and "Traceback" not in err
