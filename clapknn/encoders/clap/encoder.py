"""The LAION-CLAP audio encoder (:class:`ClapEncoder`): loading a checkpoint, embedding snippets and
text, and the identity an index records."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointError, ParameterError, first_line
from ...options import DEFAULT_PRECISION, PRECISIONS, check_choice
from ..base import Encoder
from .checkpoints import (
    AMODELS,
    CLAP_SAMPLE_RATE,
    CLIP_SAMPLES,
    EMBED_DIM,
    ENV_TOKENIZER,
    PREPROCESSING,
    ROBERTA_REPOS,
    ROBERTA_URL,
    ROBERTA_VOCAB,
    TEXT_CONTEXT,
    CheckpointSpec,
    cache_dir,
    cached_sha256,
    detect_architecture,
    is_offline,
    read_checkpoint,
    resolve_checkpoint,
    short_sha256,
)
from .forward import AudioForward, prepare_snippets, quantize_linear, torch_device_type
from .laion import TextBranchState, build_model, has_tokenizer_files, hf_cached_tokenizer, roberta_model

logger = logging.getLogger("clapknn.encoders.clap")

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
    shorter than a snippet is filled by the same rule in :mod:`clapknn.audio.snippet`, and a 3-s clip
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
            digest = cached_sha256(self.checkpoint_path)
            if digest != str(checkpoint_sha256).lower():
                raise CheckpointError(
                    f"checkpoint {self.checkpoint_path} differs from the expected one: its sha256 is "
                    f"{short_sha256(digest)}, expected {short_sha256(str(checkpoint_sha256))}"
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
            raise ParameterError(f"device {self.device!r} is not usable: {first_line(exc)}") from None
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
        found = detect_architecture(state, path)
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
            quantize_linear(self.model)
        self._forward = AudioForward(self.model, cfg, self.enable_fusion)
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
            detail = next((ln.strip() for ln in msg.splitlines() if "size mismatch" in ln), first_line(exc))
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
        x = prepare_snippets(x)
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
            if not has_tokenizer_files(folder):
                raise CheckpointError(
                    f"tokenizer folder {str(folder)!r} does not hold roberta-base tokenizer files "
                    f"(vocab.json + merges.txt, or tokenizer.json); get them from {ROBERTA_URL}"
                )
            return folder
        candidates.append(cache_dir(self.cache_dir) / "roberta-base")
        if has_tokenizer_files(candidates[0]):
            return candidates[0]
        found = hf_cached_tokenizer()
        if found is not None:
            return found
        if self.allow_download and not is_offline():
            try:
                from huggingface_hub import snapshot_download

                return Path(
                    snapshot_download(
                        ROBERTA_REPOS[0],
                        allow_patterns=["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "config.json"],
                    )
                )
            except Exception as exc:  # noqa: BLE001 - any hub failure: explain below
                raise CheckpointError(f"could not download the roberta-base tokenizer: {first_line(exc)}") from None
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
            raise CheckpointError(f"cannot load the roberta-base tokenizer from {folder}: {first_line(exc)}") from None
        probe = tok("a sad song")["input_ids"]
        if len(tok) <= 5 or len(probe) < 3 or max(probe) >= ROBERTA_VOCAB:
            raise CheckpointError(
                f"the tokenizer in {folder} is not roberta-base (vocabulary of {len(tok)}); get the files from {ROBERTA_URL}"
            )
        with _loading_notice(f"loading the CLAP text model of {self.checkpoint_name}", self.progress):
            state = read_checkpoint(self.checkpoint_path, trust=self.trust_checkpoint)
            text_branch = roberta_model()
            text_state = {k: v for k, v in state.items() if k.startswith("text_branch.")}
            del state
            self._load_weights(TextBranchState(text_branch), text_state, self.checkpoint_path, text=True)
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
            self._sha256 = cached_sha256(self.checkpoint_path)
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
