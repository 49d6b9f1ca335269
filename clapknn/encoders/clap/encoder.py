"""The LAION-CLAP audio encoder, with every quirk of the ``laion-clap`` package contained here.

What this module does differently from calling ``laion_clap.CLAP_Module`` directly:

* **No hub calls.** Importing ``laion_clap`` calls ``from_pretrained`` for three tokenizers and
  building a model calls ``RobertaModel.from_pretrained('roberta-base')``. Both happen inside
  :func:`_laion_guard`, which swaps those classmethods for offline stand-ins and puts the originals
  back on exit. The RoBERTa text model is only built (from its configuration, never downloaded)
  when :meth:`ClapEncoder.embed_text` is first called; audio-only use never holds it in memory.
* **Undeclared imports.** ``laion_clap`` imports ``torchvision`` (and ``PIL``) without declaring
  them. When no working torchvision is installed, a stand-in module is registered only while
  ``laion_clap`` is imported, then removed from :data:`sys.modules`. The entry ``laion_clap`` adds
  to :data:`sys.path` is removed again too. Nothing is written into site-packages.
* **Checkpoints are read here**, not by ``CLAP_Module.load_ckpt``: ``torch.load(weights_only=True)``,
  ``module.`` prefixes stripped, ``text_branch.embeddings.position_ids`` tolerated whether present or
  not, and the architecture (HTSAT-tiny/base/large, fusion or not) read from the weights themselves,
  so a tiny/base mix-up is a :class:`~clapknn.errors.CheckpointError` that says what the file holds.
* **Deterministic input.** Every snippet becomes exactly :data:`CLIP_SAMPLES` samples (10 s at
  48 kHz): shorter ones are repeat-padded the way CLAP was trained (``repeatpad``: whole copies,
  then zeros), longer ones are refused; a track shorter than a snippet is filled by the same rule
  before it gets here (:attr:`ClapEncoder.pad` tells :mod:`clapknn.snippet`). ``laion_clap``'s
  random crop therefore never applies, and the int16 round trip ``laion_clap`` applies to its
  inputs is reproduced, so vectors match ``CLAP_Module.get_audio_embedding_from_data`` on the same
  audio (a 3-s clip included).
* **Faster inference.** The audio branch runs under :func:`torch.inference_mode` through a lean
  forward pass over ``laion_clap``'s own modules and weights: an FFT spectrogram instead of a
  convolution, fused scaled-dot-product window attention with the relative-position bias and shift
  mask precomputed once, and none of the unused outputs (attention maps, frame-wise class scores).

Checkpoints are given by official name (see :data:`CHECKPOINTS`) or by path. Named ones are looked
up in the cache directory (:func:`cache_dir`: ``$CLAPKNN_CACHE`` or ``~/.cache/clapknn``) and, only
when allowed and online, downloaded there once and verified. An index records the checkpoint's
name (or path), the absolute path it was read from and its SHA-256; :func:`locate_checkpoint` finds
the same file again from that record (the SHA-256 is the identity, the paths are hints).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import json
import logging
import math
import os
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..digests import memo_sha256
from ..errors import AudioError, CheckpointError, ClapknnError, ParameterError
from ..options import DEFAULT_PRECISION, PRECISIONS, check_choice
from .base import Encoder

__all__ = [
    "CHECKPOINTS",
    "CLAP_SAMPLE_RATE",
    "CLIP_SAMPLES",
    "DEFAULT_CHECKPOINT",
    "CheckpointSpec",
    "ClapEncoder",
    "build_model",
    "cache_dir",
    "download_checkpoint",
    "locate_checkpoint",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

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
_ROBERTA_CONFIG = {
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
_FUSION_TYPE = "aff_2d"  # the only fusion type of the published fusion checkpoints


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


def _is_offline() -> bool:
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
    if allow_download and not _is_offline():
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


def _cached_sha256(path: Path) -> str:
    """SHA-256 of ``path``, reusing the ``.sha256.json`` written beside downloads when it still fits,
    and computed once per process for a file that has not changed (:func:`clapknn.digests.memo_sha256`)."""
    return memo_sha256(path, known=_sidecar_sha256)


def _short(digest: str) -> str:
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
            digest = _cached_sha256(path)
            if digest != expected:
                raise CheckpointError(
                    f"checkpoint {path} differs from the one this index was built with ({recorded}, sha256 "
                    f"{_short(expected)}): its sha256 is {_short(digest)}; give that file, "
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
        if expected is None or _cached_sha256(path) == expected:
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
            if expected is None or _cached_sha256(path) == expected:
                return path
            tried.append(f"{path} (other weights)")
    raise CheckpointError(
        f"cannot find the CLAP checkpoint {recorded or '?'}" + (f" (sha256 {_short(expected)})" if expected else "")
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
    if _is_offline():
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
        found = _detect_architecture(state, part)
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
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt?): {_first_line(exc)}") from None
        if not trust:
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors, so it can only be loaded with full unpickling, "
                f"which can run arbitrary code. If you trust where the file came from, set {ENV_TRUST}=1 "
                f"(or pass trust_checkpoint=True). Detail: {_first_line(exc)}"
            ) from None
        try:
            obj = _load(False)
        except Exception as exc2:  # noqa: BLE001 - any failure here means the file is unusable
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {_first_line(exc2)}") from None
    except Exception as exc:  # noqa: BLE001 - zip errors, EOF, truncated files ... all mean "corrupt"
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {_first_line(exc)}"
        ) from None

    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path} does not hold a model state dict (got {type(obj).__name__})")
    state = {(k.removeprefix("module.")): v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state dict entry {bad[0]!r} is not a tensor")
    return state


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _detect_architecture(state: dict[str, Any], path: Path | str) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------------
# Importing laion_clap and building its model without network access
# --------------------------------------------------------------------------------------------------

_LOCK = threading.RLock()
_MISSING = object()


class _NotLoaded:
    """Stands in for a tokenizer laion_clap builds at import; clapknn never uses those."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ClapknnError(
            f"laion_clap's {self._what} was not loaded (clapknn imports laion_clap offline); "
            "use ClapEncoder.embed_text for text"
        )


class _TextBranchPlaceholder:
    """What CLAP's constructor sees instead of RoBERTa until text is needed (it reads one width)."""

    def __init__(self, width: int = 768) -> None:
        import torch

        self.embeddings = types.SimpleNamespace(word_embeddings=types.SimpleNamespace(weight=torch.empty(0, width)))


def _torchvision_standin() -> dict[str, types.ModuleType]:
    """Minimal modules for the names laion_clap imports from torchvision at import time.

    Only fusion training code would use them: each raises a clear error if called.
    """

    def unavailable(name: str) -> type:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ClapknnError(f"torchvision.{name} is not available (clapknn loaded laion_clap without torchvision)")

        return type(name, (), {"__init__": __init__})

    mods: dict[str, types.ModuleType] = {}
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.ops", "torchvision.ops.misc"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        mod.__file__ = None
        mods[name] = mod
    for attr in ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor", "Resize", "CenterCrop"):
        setattr(mods["torchvision.transforms"], attr, unavailable(f"transforms.{attr}"))
    mods["torchvision.ops.misc"].FrozenBatchNorm2d = unavailable("ops.misc.FrozenBatchNorm2d")
    mods["torchvision"].datasets = mods["torchvision.datasets"]
    mods["torchvision"].transforms = mods["torchvision.transforms"]
    mods["torchvision"].ops = mods["torchvision.ops"]
    mods["torchvision.ops"].misc = mods["torchvision.ops.misc"]
    return mods


def _torchvision_works() -> bool:
    import importlib.util

    if "torchvision" in sys.modules:
        return True
    if importlib.util.find_spec("torchvision") is None:
        return False
    before = set(sys.modules)
    try:
        import torchvision.ops.misc
        import torchvision.transforms  # noqa: F401

        return True
    except Exception:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist" beside CPU torch
        for name in set(sys.modules) - before:
            if name == "torchvision" or name.startswith("torchvision."):
                del sys.modules[name]
        return False


@contextlib.contextmanager
def _laion_guard(text_factory=None) -> Iterator[None]:
    """Swap every hub-reaching ``from_pretrained`` laion_clap calls for an offline stand-in.

    Tokenizers become :class:`_NotLoaded`; ``RobertaModel.from_pretrained`` returns
    ``text_factory()`` (a placeholder by default). Everything is restored on exit, and the context
    is serialised by a lock so no other thread sees the swapped methods for longer than needed.
    """
    from transformers import (
        BartModel,
        BartTokenizer,
        BertModel,
        BertTokenizer,
        RobertaModel,
        RobertaTokenizer,
    )

    def tokenizer_stub(cls, name_or_path=None, *args, **kwargs):
        return _NotLoaded(f"{cls.__name__}({name_or_path!r})")

    def roberta_stub(cls, name_or_path=None, *args, **kwargs):
        return text_factory() if text_factory is not None else _TextBranchPlaceholder()

    def refuse(cls, name_or_path=None, *args, **kwargs):
        raise CheckpointError(f"clapknn supports the RoBERTa text branch only, not {cls.__name__}({name_or_path!r})")

    swaps = [
        (BertTokenizer, classmethod(tokenizer_stub)),
        (RobertaTokenizer, classmethod(tokenizer_stub)),
        (BartTokenizer, classmethod(tokenizer_stub)),
        (RobertaModel, classmethod(roberta_stub)),
        (BertModel, classmethod(refuse)),
        (BartModel, classmethod(refuse)),
    ]
    with _LOCK:
        saved = []
        try:
            for cls, stub in swaps:
                if any(c is cls for c, _ in saved):
                    continue  # BartTokenizer may be RobertaTokenizer under another name
                saved.append((cls, cls.__dict__.get("from_pretrained", _MISSING)))
                cls.from_pretrained = stub
            yield
        finally:
            for cls, original in reversed(saved):
                if original is _MISSING:
                    del cls.from_pretrained
                else:
                    cls.from_pretrained = original


def _import_laion_clap() -> types.ModuleType:
    """Import laion_clap without network access, torchvision or a lasting sys.path entry."""
    with _LOCK:
        if "laion_clap" in sys.modules:
            return sys.modules["laion_clap"]
        import importlib.util
        import warnings

        import transformers  # noqa: F401 - import first, so it never sees the torchvision stand-in

        if importlib.util.find_spec("laion_clap") is None:
            raise ClapknnError("the CLAP encoder needs the laion-clap package: pip install laion-clap")
        path_before = list(sys.path)
        standin = {} if _torchvision_works() else _torchvision_standin()
        added = [n for n in standin if n not in sys.modules]
        for n in added:
            sys.modules[n] = standin[n]
        try:
            with _laion_guard(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import laion_clap
        finally:
            for n in added:
                sys.modules.pop(n, None)
            # laion_clap appends its own folder to sys.path; its modules are imported by now.
            for entry in [p for p in sys.path if p not in path_before]:
                sys.path.remove(entry)
        return laion_clap


def _roberta_model():
    from transformers import RobertaConfig, RobertaModel

    return RobertaModel(RobertaConfig(**_ROBERTA_CONFIG))


def build_model(amodel: str = "HTSAT-tiny", *, enable_fusion: bool = False, text: bool = False, device: str = "cpu"):
    """Build laion_clap's ``CLAP`` model (random weights) offline; returns ``(model, model_cfg)``.

    ``text=False`` leaves the RoBERTa text branch out (a placeholder without weights); ``text=True``
    builds it from roberta-base's configuration.
    """
    import warnings

    import torch

    if amodel not in AMODELS:
        raise ParameterError(f"unknown CLAP audio model {amodel!r}; choose one of {', '.join(AMODELS)}")
    _import_laion_clap()
    from clap_module import create_model

    with _laion_guard(_roberta_model if text else None), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*meshgrid.*")
        kwargs = {"fusion_type": _FUSION_TYPE} if enable_fusion else {}
        model, cfg = create_model(
            amodel, "roberta", precision="fp32", device=torch.device(device), enable_fusion=enable_fusion, **kwargs
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cfg


def save_checkpoint(model, path: str | os.PathLike, *, position_ids: bool = True, name: str = "clapknn") -> Path:
    """Write ``model`` (a laion_clap ``CLAP``) in the official checkpoint layout.

    ``{'epoch', 'name', 'state_dict', 'optimizer'}`` with every key prefixed ``module.``, plus
    ``text_branch.embeddings.position_ids`` when ``position_ids`` (as files written by
    transformers < 4.31 have) and the model has a text branch.
    """
    import torch

    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    if position_ids and any(k.startswith("module.text_branch.") for k in state):
        state["module.text_branch.embeddings.position_ids"] = torch.arange(_ROBERTA_CONFIG["max_position_embeddings"])[None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "name": name, "state_dict": state, "optimizer": {}}, path)
    return path


# --------------------------------------------------------------------------------------------------
# The lean audio forward pass
# --------------------------------------------------------------------------------------------------


def _htk_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    """Triangular HTK-mel filters without normalisation, shape ``(n_fft // 2 + 1, n_mels)``.

    The filterbank laion_clap's fusion models were trained with (torchaudio's ``MelSpectrogram``
    defaults: ``mel_scale='htk'``, ``norm=None``).
    """
    import torch

    n_freqs = n_fft // 2 + 1
    freqs = torch.linspace(0, sr // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + fmin / 700.0)
    m_max = 2595.0 * math.log10(1.0 + fmax / 700.0)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def torch_device_type(device: str) -> str:
    """``"cuda"`` for ``"cuda:1"``, ``"cpu"`` for ``"cpu"``: what :class:`torch.autocast` takes."""
    return str(device).split(":", 1)[0]


def _quantize_linear(model) -> None:
    """Replace the linear layers of ``model``'s audio tower and projection, in place, by dynamically
    quantised int8 ones (weights int8, activations quantised per batch; CPU)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch >= 2.9 announces a move of this API to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic

        for name in ("audio_branch", "audio_projection"):
            setattr(model, name, quantize_dynamic(getattr(model, name), {torch.nn.Linear}, dtype=torch.qint8))


class _AudioForward:
    """Embeds 480,000-sample waveforms with a laion_clap ``CLAP`` model's audio branch.

    Same computation as ``CLAP.get_audio_embedding`` in eval mode for inputs of exactly
    :data:`CLIP_SAMPLES` samples, reorganised for speed. Built after the weights are loaded.
    """

    def __init__(self, model, cfg: dict[str, Any], fusion: bool) -> None:
        import torch

        self.model = model
        self.branch = model.audio_branch
        acfg = cfg["audio_cfg"]
        self.n_fft = int(acfg["window_size"])
        self.hop = int(acfg["hop_size"])
        device = next(model.parameters()).device
        self.window = torch.hann_window(self.n_fft, periodic=True, device=device)
        lm = self.branch.logmel_extractor
        if fusion:
            fb = _htk_mel_filterbank(int(acfg["sample_rate"]), self.n_fft, int(acfg["mel_bins"]), acfg["fmin"], acfg["fmax"])
            self.mel_fb = fb.to(device)
            self.amin, self.db_offset = 1e-10, 0.0
        else:
            self.mel_fb = lm.melW.detach()
            self.amin = float(lm.amin)
            self.db_offset = 10.0 * math.log10(max(float(lm.amin), float(lm.ref)))
        self.fusion = fusion
        #: device type ("cpu", "cuda") to run the transformer under bfloat16 autocast; None: fp32
        self.autocast: str | None = None
        # The token sequence is kept in the window order of the block about to run, so a block
        # costs one gather instead of a roll + window partition + reverse + roll of copies.
        # Per layer: for each block (block, gather index from the previous order or None, mask);
        # then the index back to row-major order before patch merging (None when not needed).
        self.plan = []
        for li, layer in enumerate(self.branch.layers):
            h, w = layer.blocks[0].input_resolution
            current = torch.arange(h * w)  # stored[j] = token current[j] (row-major index)
            blocks = []
            for blk in layer.blocks:
                order = self._window_order(h, w, blk.window_size, blk.shift_size)
                if torch.equal(order, current):
                    gather = None
                else:
                    inverse = torch.empty_like(current)
                    inverse[current] = torch.arange(h * w)
                    gather = inverse[order].to(device)
                current = order
                blocks.append((blk, gather, self._mask(blk).to(device)))
            restore = None
            if layer.downsample is not None and not torch.equal(current, torch.arange(h * w)):
                restore = torch.empty_like(current)
                restore[current] = torch.arange(h * w)
                restore = restore.to(device)
            self.plan.append((layer, blocks, restore))

    @staticmethod
    def _window_order(h: int, w: int, ws: int, shift: int):
        """Row-major token indices in the order of the (shifted) windows, window by window."""
        import torch

        grid = torch.arange(h * w).view(h, w)
        if shift > 0:
            grid = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
        return grid.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1)

    @staticmethod
    def _mask(blk):
        """Relative-position bias (+ shift mask) laid out for scaled_dot_product_attention."""
        attn = blk.attn
        n = attn.window_size[0] * attn.window_size[1]
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # heads, n, n
        if blk.attn_mask is not None:
            return (bias.unsqueeze(0) + blk.attn_mask.unsqueeze(1)).reshape(1, -1, n, n).contiguous()
        return bias.unsqueeze(0).contiguous()

    def logmel(self, wave):
        import torch

        spec = torch.stft(
            wave, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )  # (B, F, T)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # (B, T, M)
        mel = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        if self.db_offset:
            mel = mel - self.db_offset
        return mel.unsqueeze(1)  # (B, 1, T, M)

    def _block(self, blk, x, mask):
        """One Swin block on tokens already in its window order."""
        import torch.nn.functional as F

        b, length, c = x.shape
        ws, attn = blk.window_size, blk.attn
        heads, n = attn.num_heads, ws * ws
        hd = c // heads
        bw = b * (length // n)
        qkv = attn.qkv(blk.norm1(x).view(bw, n, c)).reshape(bw, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (bw, heads, n, hd)
        if blk.attn_mask is not None:  # windows of one image share the mask: fold them into heads
            q, k, v = (t.reshape(b, -1, n, hd) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        o = attn.proj(o.reshape(bw, heads, n, hd).transpose(1, 2).reshape(b, length, c))
        x = x + o
        return x + blk.mlp(blk.norm2(x))

    def __call__(self, wave):
        import torch
        import torch.nn.functional as F

        x = self.logmel(wave)  # always fp32: log10 of small mel energies needs the range
        if self.autocast is None:
            return F.normalize(self._tower(x), dim=-1)
        with torch.autocast(self.autocast, dtype=torch.bfloat16):
            y = self._tower(x)
        return F.normalize(y.float(), dim=-1)  # unit length in fp32

    def _tower(self, x):
        """The audio tower after the log-mel front end: the projected, not yet normalised vector."""
        ab = self.branch
        x = ab.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = ab.reshape_wav2img(x)
        # Fusion models see four identical copies of a 10-s mel and use only the first.
        x = ab.patch_embed(x, longer_idx=[]) if self.fusion else ab.patch_embed(x)
        for layer, blocks, restore in self.plan:
            for blk, gather, mask in blocks:
                if gather is not None:
                    x = x[:, gather]
                x = self._block(blk, x, mask)
            if layer.downsample is not None:
                if restore is not None:
                    x = x[:, restore]
                x = layer.downsample(x)
        # HTSAT's average pool over all tokens (order-free, so the last window order can stay)
        x = ab.norm(x).mean(dim=1)
        return self.model.audio_projection(x)


# --------------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------------


def _prepare(snippets: np.ndarray) -> np.ndarray:
    """Validate, int16-round-trip and repeat-pad snippets to ``(n, CLIP_SAMPLES)`` float32."""
    x = np.asarray(snippets)
    if x.ndim != 2:
        raise ParameterError(f"snippets must be a 2-D array (n, samples), got shape {x.shape}")
    n, length = x.shape
    if length == 0:
        raise ParameterError("snippets are empty (0 samples)")
    if length > CLIP_SAMPLES:
        raise ParameterError(
            f"CLAP takes snippets of at most {CLIP_SAMPLES} samples (10 s at {CLAP_SAMPLE_RATE} Hz), got "
            f"{length}; use a snippet length of 10 s or less"
        )
    if not np.isfinite(x).all():
        raise AudioError("snippets contain NaN or infinite samples")
    # laion_clap quantises every input to int16 and back (as in training): keep that.
    x = (np.clip(x.astype(np.float32, copy=False), -1.0, 1.0) * 32767.0).astype(np.int16)
    x = (x / 32767.0).astype(np.float32)
    if length < CLIP_SAMPLES:
        # CLAP's "repeatpad": as many whole copies as fit, then zeros.
        reps = CLIP_SAMPLES // length
        out = np.zeros((n, CLIP_SAMPLES), dtype=np.float32)
        out[:, : reps * length] = np.tile(x, (1, reps))
        x = out
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _loading_notice(what: str, show: bool | None) -> Iterator[None]:
    """Log ``what`` and, when ``show`` (default: stderr is a terminal), say it on stderr with the
    seconds it took, so a model load of several seconds is not a silent pause."""
    logger.info("%s", what)
    if show is None:
        stream = sys.stderr
        show = bool(stream is not None and getattr(stream, "isatty", lambda: False)()) and not logger.isEnabledFor(logging.INFO)
    start = time.perf_counter()
    if show:
        print(f"clapknn: {what} ...", end="", file=sys.stderr, flush=True)
    done = False
    try:
        yield
        done = True
    finally:
        if show:
            print(f" done ({time.perf_counter() - start:.1f} s)" if done else " failed", file=sys.stderr, flush=True)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ClapEncoder(Encoder):
    """LAION-CLAP audio embeddings (512-d, L2-normalised) of 10-s snippets at 48 kHz.

    Parameters
    ----------
    checkpoint : str or path, optional
        An official name (:data:`CHECKPOINTS`; ``.pt`` optional) or a local ``.pt`` file. Default:
        :data:`DEFAULT_CHECKPOINT` (the music model, HTSAT-base).
    amodel : {"HTSAT-tiny", "HTSAT-base", "HTSAT-large"}, optional
        Expected audio architecture. Read from the checkpoint when not given; a different one
        raises :class:`~clapknn.errors.CheckpointError`.
    enable_fusion : bool, optional
        Expected fusion setting; read from the checkpoint when not given.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default CUDA when available.
    threads : int, optional
        CPU threads for PyTorch (``torch.set_num_threads``, process-wide). Default: PyTorch's.
    batch_size : int, optional
        Most snippets per forward pass (a larger :meth:`embed` call is split). Default: 4 on CPU,
        where bigger batches are slower per snippet, 16 on CUDA. Does not change the vectors
        beyond float rounding.
    allow_download : bool
        Download a named checkpoint missing from the cache (never when ``HF_HUB_OFFLINE=1``).
    tokenizer_path : str or path, optional
        Folder with the roberta-base tokenizer files, for :meth:`embed_text`.
    cache_dir : str or path, optional
        Overrides :func:`cache_dir` (``$CLAPKNN_CACHE``).
    trust_checkpoint : bool, optional
        Allow a checkpoint that needs full unpickling (``weights_only=False``). Default:
        ``$CLAPKNN_TRUST_CHECKPOINT``.
    checkpoint_sha256 : str, optional
        The SHA-256 the checkpoint file must have (an index's record); another file raises
        :class:`~clapknn.errors.CheckpointError` before anything is loaded.
    progress : bool, optional
        Say on stderr that the model is loading (it takes seconds). Default: when stderr is a
        terminal. Always logged (``clapknn -v``).
    precision : {"fp32", "int8", "bf16"}
        Arithmetic of the audio tower (:data:`clapknn.options.PRECISIONS`). ``"fp32"`` (default) is
        the reference. ``"int8"``: dynamic int8 quantisation of every linear layer
        (``torch.ao.quantization.quantize_dynamic``; CPU only). ``"bf16"``: the transformer runs
        under bfloat16 autocast (the log-mel front end stays fp32; fast only on CPUs with bf16
        instructions, e.g. AVX512-BF16 or AMX). Both give other vectors than fp32 (cosine and
        speed in docs/scale.md), so the precision is part of :meth:`identity` and an index refuses
        queries made with another one.

    Notes
    -----
    Snippets shorter than 480,000 samples are repeat-padded (whole copies, then zeros); longer ones
    raise :class:`~clapknn.errors.ParameterError`. The same snippet gives the same vector whatever
    the batch it is in (up to float rounding, ~1e-6). :attr:`pad` is ``"repeatpad"``, so a track
    shorter than a snippet is filled by the same rule in :mod:`clapknn.snippet`, and a 3-s clip
    gives the vector ``CLAP_Module.get_audio_embedding_from_data`` gives for it.
    """

    name = "clap"
    sample_rate = CLAP_SAMPLE_RATE
    dim = EMBED_DIM
    pad = "repeatpad"  # laion-clap's data_filling="repeatpad": whole copies, then zeros

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        *,
        amodel: str | None = None,
        enable_fusion: bool | None = None,
        device: str | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        allow_download: bool = False,
        tokenizer_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        trust_checkpoint: bool | None = None,
        checkpoint_sha256: str | None = None,
        progress: bool | None = None,
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        check_choice("precision", precision, PRECISIONS)
        if amodel is not None and amodel not in AMODELS:
            raise ParameterError(f"unknown CLAP audio model {amodel!r}; choose one of {', '.join(AMODELS)}")
        if batch_size is not None and int(batch_size) < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None and int(threads) < 1:
            raise ParameterError(f"threads must be >= 1, got {threads}")
        self.tokenizer_path = tokenizer_path
        self.allow_download = bool(allow_download)
        self.cache_dir = cache_dir
        self.trust_checkpoint = trust_checkpoint
        self.progress = progress

        path, spec = resolve_checkpoint(checkpoint, allow_download=allow_download, cache=cache_dir)
        self.checkpoint_path = path.resolve()
        self.checkpoint_name = spec.name if spec is not None else str(self.checkpoint_path)
        self._sha256: str | None = None
        if checkpoint_sha256 is not None:
            digest = _cached_sha256(self.checkpoint_path)
            if digest != str(checkpoint_sha256).lower():
                raise CheckpointError(
                    f"checkpoint {self.checkpoint_path} differs from the expected one: its sha256 is "
                    f"{_short(digest)}, expected {_short(str(checkpoint_sha256))}"
                )
            self._sha256 = digest

        import torch

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.threads = threads
        self.device = str(device) if device is not None else _default_device()
        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise ParameterError(f"device {self.device!r} is not usable: {_first_line(exc)}") from None
        if precision == "int8" and not self.device.startswith("cpu"):
            raise ParameterError(f"precision 'int8' runs on the CPU only, not on {self.device!r}; use fp32 or bf16 there")
        self.precision = precision
        if batch_size is None:
            batch_size = 16 if self.device.startswith("cuda") else 4
        self.batch_size = int(batch_size)

        with _loading_notice(f"loading CLAP model {self.checkpoint_name} on {self.device}", progress):
            self._load(path, spec, amodel, enable_fusion, trust_checkpoint)
        self._tokenizer = None
        self._text_ready = False

    def _load(self, path: Path, spec: CheckpointSpec | None, amodel, enable_fusion, trust_checkpoint) -> None:
        """Read the checkpoint, check its architecture and build the audio model from it."""
        state = read_checkpoint(path, trust=trust_checkpoint)
        found = _detect_architecture(state, path)
        if amodel is not None and amodel != found["amodel"]:
            raise CheckpointError(
                f"{path} holds an {found['amodel']} audio encoder, but amodel={amodel!r} was requested; "
                f"HTSAT-tiny and HTSAT-base weights are not interchangeable. Drop amodel (it is read from "
                f"the checkpoint) or use a matching checkpoint"
            )
        if enable_fusion is not None and bool(enable_fusion) != found["fusion"]:
            kind = "a fusion" if found["fusion"] else "a non-fusion"
            raise CheckpointError(f"{path} holds {kind} model, but enable_fusion={bool(enable_fusion)} was requested")
        if spec is not None and (spec.amodel, spec.fusion) != (found["amodel"], found["fusion"]):
            logger.warning(
                "%s is named like the official %s (%s, fusion=%s) but holds %s (fusion=%s); using what it holds",
                path, spec.name, spec.amodel, spec.fusion, found["amodel"], found["fusion"],
            )
        self.amodel = found["amodel"]
        self.enable_fusion = found["fusion"]
        self.has_text_weights = found["text"]

        model, cfg = build_model(self.amodel, enable_fusion=self.enable_fusion, text=False, device="cpu")
        self._load_weights(model, state, path, text=False)
        del state
        self.model = model.to(self.device)
        self.model_cfg = cfg
        if self.precision == "int8":
            _quantize_linear(self.model)
        self._forward = _AudioForward(self.model, cfg, self.enable_fusion)
        if self.precision == "bf16":
            self._forward.autocast = torch_device_type(self.device)

    # -- weights ---------------------------------------------------------------------------------

    @staticmethod
    def _load_weights(model, state: dict[str, Any], path: Path, *, text: bool) -> None:
        """Copy ``state`` into ``model``; with ``text=False`` the text branch is skipped.

        Every other key must match both ways: anything missing or left over is an error.
        """

        def wanted(k: str) -> bool:
            return text or not k.startswith("text_branch.")

        state = {k: v for k, v in state.items() if wanted(k) and k != "text_branch.embeddings.position_ids"}
        expected = {k for k in model.state_dict() if wanted(k)}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
            raise CheckpointError(f"{path} does not fit the CLAP model: weights {'; '.join(parts)}")
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            msg = str(exc)
            detail = next((ln.strip() for ln in msg.splitlines() if "size mismatch" in ln), _first_line(exc))
            raise CheckpointError(f"{path} does not fit the CLAP model: {detail}") from None

    # -- audio -----------------------------------------------------------------------------------

    def embed(self, snippets: np.ndarray) -> np.ndarray:
        """Embed snippets of mono 48-kHz audio.

        Parameters
        ----------
        snippets : np.ndarray [shape=(n, n_samples)]
            ``n_samples`` ≤ 480,000; shorter snippets are repeat-padded to 480,000.

        Returns
        -------
        np.ndarray [shape=(n, 512), dtype=float32]
            L2-normalised.
        """
        import torch

        x = np.asarray(snippets)
        if x.ndim == 2 and x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = _prepare(x)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                wave = torch.from_numpy(x[i : i + self.batch_size]).to(self.device)
                out.append(self._forward(wave).float().cpu().numpy())
        return np.concatenate(out)  # rows already unit length (F.normalize in the forward)

    # -- text ------------------------------------------------------------------------------------

    def _tokenizer_dir(self) -> Path:
        explicit = self.tokenizer_path or os.environ.get(ENV_TOKENIZER)
        candidates: list[Path] = []
        if explicit:
            folder = Path(explicit).expanduser()
            if not _has_tokenizer_files(folder):
                raise CheckpointError(
                    f"tokenizer folder {str(folder)!r} does not hold roberta-base tokenizer files "
                    f"(vocab.json + merges.txt, or tokenizer.json); get them from {ROBERTA_URL}"
                )
            return folder
        candidates.append(cache_dir(self.cache_dir) / "roberta-base")
        if _has_tokenizer_files(candidates[0]):
            return candidates[0]
        found = _hf_cached_tokenizer()
        if found is not None:
            return found
        if self.allow_download and not _is_offline():
            try:
                from huggingface_hub import snapshot_download

                return Path(
                    snapshot_download(
                        ROBERTA_REPOS[0],
                        allow_patterns=["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "config.json"],
                    )
                )
            except Exception as exc:  # noqa: BLE001 - any hub failure: explain below
                raise CheckpointError(f"could not download the roberta-base tokenizer: {_first_line(exc)}") from None
        raise CheckpointError(
            "CLAP text prompts need the roberta-base tokenizer files (vocab.json and merges.txt), and none were "
            f"found in {candidates[0]} or the Hugging Face cache. Put them in {candidates[0]} (from "
            f"{ROBERTA_URL}), point ${ENV_TOKENIZER} or tokenizer_path at a folder holding them, or allow "
            "downloading while online."
        )

    def _ensure_text(self) -> None:
        if self._text_ready:
            return
        if not self.has_text_weights:
            raise CheckpointError(f"{self.checkpoint_path} has no text branch weights; text prompts need a full CLAP checkpoint")
        folder = self._tokenizer_dir()
        from transformers import RobertaTokenizer

        try:
            tok = RobertaTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot load the roberta-base tokenizer from {folder}: {_first_line(exc)}") from None
        probe = tok("a sad song")["input_ids"]
        if len(tok) <= 5 or len(probe) < 3 or max(probe) >= ROBERTA_VOCAB:
            raise CheckpointError(
                f"the tokenizer in {folder} is not roberta-base (vocabulary of {len(tok)}); get the files from {ROBERTA_URL}"
            )
        with _loading_notice(f"loading the CLAP text model of {self.checkpoint_name}", self.progress):
            state = read_checkpoint(self.checkpoint_path, trust=self.trust_checkpoint)
            text_branch = _roberta_model()
            text_state = {k: v for k, v in state.items() if k.startswith("text_branch.")}
            del state
            self._load_weights(_Wrap(text_branch), text_state, self.checkpoint_path, text=True)
        text_branch.eval()
        for p in text_branch.parameters():
            p.requires_grad_(False)
        self.model.text_branch = text_branch.to(self.device)
        self._tokenizer = tok
        self._text_ready = True

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """CLAP text embeddings, in the same space as :meth:`embed`.

        Needs the roberta-base tokenizer files (see :meth:`_tokenizer_dir` for where they are looked
        up); the text weights come from the checkpoint. Loaded on first use.

        Returns
        -------
        np.ndarray [shape=(len(texts), 512), dtype=float32]
            L2-normalised.
        """
        import torch
        import torch.nn.functional as F

        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise ParameterError("text prompts must be non-empty strings")
        self._ensure_text()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(
                    texts[i : i + self.batch_size], padding="max_length", truncation=True,
                    max_length=TEXT_CONTEXT, return_tensors="pt",
                )
                hidden = self.model.text_branch(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )["pooler_output"]
                out.append(F.normalize(self.model.text_projection(hidden), dim=-1).float().cpu().numpy())
        return np.concatenate(out)

    # -- identity --------------------------------------------------------------------------------

    @property
    def checkpoint_sha256(self) -> str:
        """SHA-256 of the checkpoint file (computed once)."""
        if self._sha256 is None:
            self._sha256 = _cached_sha256(self.checkpoint_path)
        return self._sha256

    def identity(self) -> dict[str, Any]:
        """Name, rates, dim, checkpoint (official name or absolute path), the absolute path it was
        read from (``checkpoint_path``, a location hint: see :func:`locate_checkpoint`) and its
        SHA-256 (the identity), the audio architecture and clapknn's preprocessing version."""
        ident = super().identity()
        ident.update(
            checkpoint=self.checkpoint_name,
            checkpoint_path=str(self.checkpoint_path),
            checkpoint_sha256=self.checkpoint_sha256,
            amodel=self.amodel,
            fusion=bool(self.enable_fusion),
            clip_samples=CLIP_SAMPLES,
            preprocessing=PREPROCESSING,
        )
        if self.precision != DEFAULT_PRECISION:  # fp32 indexes keep the identity they always had
            ident["precision"] = self.precision
        return ident

    def __repr__(self) -> str:
        return (
            f"ClapEncoder(checkpoint={self.checkpoint_name!r}, amodel={self.amodel!r}, "
            f"fusion={self.enable_fusion}, device={self.device!r}, precision={self.precision!r})"
        )


class _Wrap:
    """Lets :meth:`ClapEncoder._load_weights` check a bare text model under ``text_branch.`` keys."""

    def __init__(self, text_branch) -> None:
        self.text_branch = text_branch

    def state_dict(self) -> dict[str, Any]:
        return {f"text_branch.{k}": v for k, v in self.text_branch.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True):
        return self.text_branch.load_state_dict({k[len("text_branch."):]: v for k, v in state.items()}, strict=strict)


def _has_tokenizer_files(folder: Path) -> bool:
    return folder.is_dir() and (
        ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) or (folder / "tokenizer.json").is_file()
    )


def _hf_cached_tokenizer() -> Path | None:
    """The snapshot folder of roberta-base's tokenizer in the local Hugging Face cache, if there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for repo in ROBERTA_REPOS:
        try:
            vocab = try_to_load_from_cache(repo, "vocab.json")
            merges = try_to_load_from_cache(repo, "merges.txt")
        except Exception as exc:  # noqa: BLE001 - a malformed cache is the same as no cache
            logger.debug("Hugging Face cache lookup for %s failed: %s", repo, exc)
            continue
        if isinstance(vocab, str) and isinstance(merges, str):
            return Path(vocab).parent
    return None
