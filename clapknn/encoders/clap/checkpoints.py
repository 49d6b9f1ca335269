"""CLAP checkpoints: official names, locating, downloading, reading, and the architecture a file holds.

Checkpoints are given by official name (see :data:`CHECKPOINTS`) or by path. Named ones are looked
up in the cache directory (:func:`cache_dir`: ``$CLAPKNN_CACHE`` or ``~/.cache/clapknn``) and, only
when allowed and online, downloaded there once and verified. An index records the checkpoint's
name (or path), the absolute path it was read from and its SHA-256; :func:`locate_checkpoint` finds
the same file again from that record (the SHA-256 is the identity, the paths are hints). Files are
read with ``torch.load(weights_only=True)`` (:func:`read_checkpoint`), not ``CLAP_Module.load_ckpt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...audio.digests import memo_sha256
from ...errors import CheckpointError, first_line

logger = logging.getLogger("clapknn.encoders.clap")

CLAP_SAMPLE_RATE = 48000  # Hz
CLIP_SAMPLES = 480000  # samples: 10 s at 48 kHz, the length CLAP was trained on
EMBED_DIM = 512
TEXT_CONTEXT = 77  # tokens, as laion-clap pads/truncates text
#: Changes whenever clapknn's preparation of CLAP inputs changes the vectors.
#: (``+tracks``: short tracks are filled by the same ``repeatpad`` rule in :mod:`clapknn.snippet`.)
PREPROCESSING = "int16-roundtrip+repeatpad-480000+tracks"

#: Where the official checkpoints are published.
BASE_URL = "https://huggingface.co/lukewys/laion_clap/resolve/main/"
#: Environment variables read by this module.
ENV_CACHE = "CLAPKNN_CACHE"  # cache directory
ENV_BASE_URL = "CLAPKNN_CHECKPOINT_URL"  # mirror of BASE_URL (a folder URL ending in /)
ENV_TOKENIZER = "CLAPKNN_TOKENIZER"  # folder with roberta-base tokenizer files
ENV_TRUST = "CLAPKNN_TRUST_CHECKPOINT"  # "1": allow full unpickling of checkpoints
ROBERTA_URL = "https://huggingface.co/FacebookAI/roberta-base"
ROBERTA_REPOS = ("FacebookAI/roberta-base", "roberta-base")
ROBERTA_VOCAB = 50265

# roberta-base's architecture, so the text model is built from a configuration, not downloaded.
ROBERTA_CONFIG = {
    "vocab_size": ROBERTA_VOCAB,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

# HTSAT patch-embedding width -> laion-clap model config name.
_AMODEL_BY_WIDTH = {96: "HTSAT-tiny", 128: "HTSAT-base", 256: "HTSAT-large"}
AMODELS = ("HTSAT-tiny", "HTSAT-base", "HTSAT-large")
FUSION_TYPE = "aff_2d"  # the only fusion type of the published fusion checkpoints


@dataclass(frozen=True)
class CheckpointSpec:
    """An official LAION-CLAP checkpoint."""

    name: str
    amodel: str
    fusion: bool
    description: str

    @property
    def filename(self) -> str:
        """The checkpoint's file name, ``<name>.pt``."""
        return f"{self.name}.pt"

    @property
    def url(self) -> str:
        """Where to download it (``$CLAPKNN_CHECKPOINT_URL`` replaces the base address)."""
        return os.environ.get(ENV_BASE_URL, BASE_URL) + self.filename


#: The official checkpoints by name (the file is ``<name>.pt``).
CHECKPOINTS: dict[str, CheckpointSpec] = {
    s.name: s
    for s in (
        CheckpointSpec(
            "music_audioset_epoch_15_esc_90.14", "HTSAT-base", False, "music + AudioSet (clapknn's default)"
        ),
        CheckpointSpec("music_speech_epoch_15_esc_89.25", "HTSAT-base", False, "music + speech"),
        CheckpointSpec(
            "music_speech_audioset_epoch_15_esc_89.98", "HTSAT-base", False, "music + speech + AudioSet"
        ),
        CheckpointSpec("630k-audioset-best", "HTSAT-tiny", False, "LAION-Audio-630K + AudioSet"),
        CheckpointSpec("630k-best", "HTSAT-tiny", False, "LAION-Audio-630K"),
        CheckpointSpec("630k-audioset-fusion-best", "HTSAT-tiny", True, "LAION-Audio-630K + AudioSet, fusion"),
        CheckpointSpec("630k-fusion-best", "HTSAT-tiny", True, "LAION-Audio-630K, fusion"),
    )
}
DEFAULT_CHECKPOINT = "music_audioset_epoch_15_esc_90.14"


# --------------------------------------------------------------------------------------------------
# Locating checkpoints
# --------------------------------------------------------------------------------------------------


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The directory named checkpoints are looked up in (and downloaded to).

    ``override`` if given, else ``$CLAPKNN_CACHE``, else ``$XDG_CACHE_HOME/clapknn``, else
    ``~/.cache/clapknn``. Not created until something is downloaded.
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "clapknn"


def is_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "CLAPKNN_OFFLINE"))


def _spec_for(name: str) -> CheckpointSpec | None:
    key = name.removesuffix(".pt")
    return CHECKPOINTS.get(key)


def _names() -> str:
    return ", ".join(CHECKPOINTS)


def resolve_checkpoint(
    checkpoint: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
    cache: str | os.PathLike | None = None,
) -> tuple[Path, CheckpointSpec | None]:
    """Find the file behind ``checkpoint`` (an official name, a path, or ``None`` for the default).

    Returns the path and the official spec when the file is an official checkpoint (by name).

    Raises
    ------
    CheckpointError
        Unknown name; missing file (with where to put it and the URL); offline download refused.
    """
    if checkpoint is None:
        checkpoint = DEFAULT_CHECKPOINT
    text = os.fspath(checkpoint)
    path = Path(text).expanduser()
    if path.is_file():
        return path, _spec_for(path.name)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {text!r} is a directory, not a .pt file")
    spec = _spec_for(text) if os.sep not in text else None
    if spec is None:
        if os.sep in text or text.endswith((".pt", ".ckpt", ".pth", ".bin")):
            raise CheckpointError(
                f"checkpoint file {text!r} does not exist. Give the path of a LAION-CLAP .pt file or one "
                f"of the official names: {_names()}"
            )
        raise CheckpointError(f"unknown CLAP checkpoint {text!r}; official names: {_names()} (or give a path)")
    folder = cache_dir(cache)
    target = folder / spec.filename
    if target.is_file():
        return target, spec
    if allow_download and not is_offline():
        return download_checkpoint(spec.name, cache=cache), spec
    why = (
        "not downloading because offline (HF_HUB_OFFLINE or CLAPKNN_OFFLINE is set)"
        if allow_download
        else "downloading was not requested (pass --allow-download / allow_download=True)"
    )
    raise CheckpointError(
        f"CLAP checkpoint {spec.name!r} ({spec.amodel}) is not in the cache: expected {target}. "
        f"Download {spec.url} and put it there (or set {ENV_CACHE} to the folder holding it, or pass "
        f"--checkpoint PATH); {why}."
    )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _sidecar_sha256(path: Path, st: os.stat_result) -> str | None:
    """The digest recorded beside a download, when the file still has the recorded size and mtime."""
    try:
        rec = json.loads(_sidecar(path).read_text())
        if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns and len(rec.get("sha256", "")) == 64:
            return str(rec["sha256"])
    except (OSError, ValueError, AttributeError):
        pass
    return None


def cached_sha256(path: Path) -> str:
    """SHA-256 of ``path``, reusing the ``.sha256.json`` written beside downloads when it still fits,
    and computed once per process for a file that has not changed (:func:`clapknn.digests.memo_sha256`)."""
    return memo_sha256(path, known=_sidecar_sha256)


def short_sha256(digest: str) -> str:
    return f"{digest[:12]}…"


def locate_checkpoint(
    identity: dict[str, Any],
    checkpoint: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
    cache: str | os.PathLike | None = None,
) -> Path:
    """Find the checkpoint file an encoder identity (as recorded in an index) was made with.

    Tries, in order: ``checkpoint`` (what the user gives now: a path or an official name), the
    absolute path recorded at build time (``checkpoint_path``; an older index's ``checkpoint`` path),
    then the cache by official name (downloading only with ``allow_download``). A file is used only
    when its SHA-256 equals the recorded ``checkpoint_sha256`` (when one is recorded): the hash is
    the identity, the paths are hints, so a moved or renamed copy of the same file is fine.

    Raises
    ------
    CheckpointError
        ``checkpoint`` is given but holds other weights (the checkpoint differs), or no candidate
        holds the recorded file (the message lists where it looked).
    """
    expected = identity.get("checkpoint_sha256") or None
    recorded = identity.get("checkpoint")
    recorded = os.fspath(recorded) if recorded else None
    if checkpoint is not None:
        path, _ = resolve_checkpoint(checkpoint, allow_download=allow_download, cache=cache)
        path = path.resolve()
        if expected is not None:
            digest = cached_sha256(path)
            if digest != expected:
                raise CheckpointError(
                    f"checkpoint {path} differs from the one this index was built with ({recorded}, sha256 "
                    f"{short_sha256(expected)}): its sha256 is {short_sha256(digest)}; give that file, "
                    "or rebuild the index with this checkpoint"
                )
        return path
    tried: list[str] = []
    seen: set[str] = set()
    hints = [identity.get("checkpoint_path")]
    if recorded and _spec_for(recorded) is None:
        hints.append(recorded)  # an older index records a path-given checkpoint here
    for hint in hints:
        if not hint or str(hint) in seen:
            continue
        seen.add(str(hint))
        path = Path(hint)
        if not path.is_file():
            tried.append(f"{path} (missing)")
            continue
        if expected is None or cached_sha256(path) == expected:
            return path
        tried.append(f"{path} (other weights)")
    names = [n for n in (recorded, Path(str(identity.get("checkpoint_path") or "")).name) if n and _spec_for(n) is not None]
    if names:
        spec = _spec_for(names[0])
        try:
            path, _ = resolve_checkpoint(spec.name, allow_download=allow_download, cache=cache)
        except CheckpointError:
            tried.append(f"{cache_dir(cache) / spec.filename} (missing; {spec.url})")
        else:
            if expected is None or cached_sha256(path) == expected:
                return path
            tried.append(f"{path} (other weights)")
    raise CheckpointError(
        f"cannot find the CLAP checkpoint {recorded or '?'}" + (f" (sha256 {short_sha256(expected)})" if expected else "")
        + f"; looked at {'; '.join(tried) or 'nothing recorded'}. Pass --checkpoint PATH (checkpoint=...) with that file"
    )


def download_checkpoint(name: str, *, cache: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download the official checkpoint ``name`` into the cache directory (once) and verify it.

    The file is streamed to a temporary name, its size checked against ``Content-Length``, its
    SHA-256 against the hash the server publishes for it (Hugging Face's LFS ``ETag``) when there is
    one, and its contents read back as a CLAP checkpoint of the expected architecture before it is
    moved into place. Returns the cached path (immediately when it is already there).

    Raises
    ------
    CheckpointError
        Unknown name, offline, network failure or a file that fails verification.
    """
    spec = _spec_for(name)
    if spec is None:
        raise CheckpointError(f"unknown CLAP checkpoint {name!r}; official names: {_names()}")
    folder = cache_dir(cache)
    target = folder / spec.filename
    if target.is_file():
        return target
    if is_offline():
        raise CheckpointError(
            f"cannot download {spec.url}: offline (HF_HUB_OFFLINE/CLAPKNN_OFFLINE is set). Download it "
            f"elsewhere and put it at {target}."
        )
    import urllib.error
    import urllib.request

    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{spec.filename}.{os.getpid()}.part"
    logger.info("downloading %s to %s", spec.url, target)
    h = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout) as resp, open(part, "wb") as out:
            expected_size = resp.headers.get("Content-Length")
            etag = (resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or "").strip('"').lower()
            for block in iter(lambda: resp.read(1 << 22), b""):
                out.write(block)
                h.update(block)
                size += len(block)
        digest = h.hexdigest()
        if expected_size is not None and int(expected_size) != size:
            raise CheckpointError(f"download of {spec.url} is incomplete: {size} of {expected_size} bytes")
        if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) and etag != digest:
            raise CheckpointError(f"download of {spec.url} is corrupt: sha256 {digest}, server says {etag}")
        state = read_checkpoint(part)
        found = detect_architecture(state, part)
        if (found["amodel"], found["fusion"]) != (spec.amodel, spec.fusion):
            raise CheckpointError(
                f"download of {spec.url} holds {found['amodel']} (fusion={found['fusion']}), expected "
                f"{spec.amodel} (fusion={spec.fusion})"
            )
        del state
        os.replace(part, target)
        st = target.stat()
        _sidecar(target).write_text(json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CheckpointError(
            f"could not download {spec.url} ({exc}). Download it yourself and put it at {target}."
        ) from exc
    finally:
        if part.exists():
            part.unlink()
    return target


# --------------------------------------------------------------------------------------------------
# Reading and writing checkpoints
# --------------------------------------------------------------------------------------------------


def _trust_from_env() -> bool:
    return os.environ.get(ENV_TRUST, "").strip().lower() in {"1", "true", "yes", "on"}


def read_checkpoint(path: str | os.PathLike, *, trust: bool | None = None) -> dict[str, Any]:
    """Read the state dict of a LAION-CLAP checkpoint file, without ``laion_clap``.

    Accepts the official layout (``{'epoch', 'name', 'state_dict', 'optimizer'}`` with keys prefixed
    ``module.``) and a bare state dict. Loads with ``weights_only=True`` (memory-mapped when the file
    allows it); only when ``trust`` (or ``$CLAPKNN_TRUST_CHECKPOINT=1``) is set does a file that
    needs full unpickling get loaded with ``weights_only=False``. Keys come back without ``module.``.

    Raises
    ------
    CheckpointError
        Missing, unreadable, corrupt or not a state dict.
    """
    import pickle

    import torch

    path = Path(path)
    if trust is None:
        trust = _trust_from_env()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {str(path)!r} is empty (0 bytes)")

    def _load(weights_only: bool):
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=weights_only)

    try:
        obj = _load(True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text and "weights_only" not in text:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt?): {first_line(exc)}") from None
        if not trust:
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors, so it can only be loaded with full unpickling, "
                f"which can run arbitrary code. If you trust where the file came from, set {ENV_TRUST}=1 "
                f"(or pass trust_checkpoint=True). Detail: {first_line(exc)}"
            ) from None
        try:
            obj = _load(False)
        except Exception as exc2:  # noqa: BLE001 - any failure here means the file is unusable
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {first_line(exc2)}") from None
    except Exception as exc:  # noqa: BLE001 - zip errors, EOF, truncated files ... all mean "corrupt"
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {first_line(exc)}"
        ) from None

    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path} does not hold a model state dict (got {type(obj).__name__})")
    state = {(k.removeprefix("module.")): v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state dict entry {bad[0]!r} is not a tensor")
    return state


def detect_architecture(state: dict[str, Any], path: Path | str) -> dict[str, Any]:
    """Read the audio architecture (and whether a text branch is present) from the weights."""
    w = state.get("audio_branch.patch_embed.proj.weight")
    if w is None:
        hint = ""
        if any(k.startswith("sed_model.") for k in state):
            hint = " (it looks like an HTS-AT audio-only checkpoint, not a CLAP one)"
        raise CheckpointError(f"{path} is not a LAION-CLAP checkpoint: no HTSAT audio branch{hint}")
    width = int(w.shape[0])
    amodel = _AMODEL_BY_WIDTH.get(width)
    if amodel is None:
        raise CheckpointError(f"{path}: unknown HTSAT width {width}; clapknn knows {sorted(_AMODEL_BY_WIDTH)}")
    fusion = any(k.startswith("audio_branch.patch_embed.mel_conv2d.") for k in state)
    if any(k.startswith("audio_branch.mel_conv1d.") for k in state):
        raise CheckpointError(f"{path}: 1-D fusion checkpoints are not supported (only the published aff_2d fusion)")
    wte = state.get("text_branch.embeddings.word_embeddings.weight")
    text = wte is not None
    if text and tuple(wte.shape) != (ROBERTA_VOCAB, 768):
        raise CheckpointError(
            f"{path}: the text branch is not roberta-base (word embeddings {tuple(wte.shape)}); clapknn supports "
            "the RoBERTa text branch of the published checkpoints"
        )
    if not text and any(k.startswith("text_branch.") for k in state):
        raise CheckpointError(f"{path}: the text branch is not RoBERTa; clapknn supports the published checkpoints")
    return {"amodel": amodel, "fusion": fusion, "text": text}
