"""The LAION-CLAP audio encoder, with every quirk of the ``laion-clap`` package contained in this package.

Modules, by job: :mod:`.checkpoints` (names, locating, downloading, reading), :mod:`.laion` (importing
``laion_clap`` and building its model offline), :mod:`.forward` (the lean forward pass, precisions,
input preparation), :mod:`.encoder` (:class:`ClapEncoder`).

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

from .checkpoints import (
    CHECKPOINTS,
    CLAP_SAMPLE_RATE,
    CLIP_SAMPLES,
    DEFAULT_CHECKPOINT,
    CheckpointSpec,
    cache_dir,
    download_checkpoint,
    locate_checkpoint,
    read_checkpoint,
    resolve_checkpoint,
)
from .encoder import ClapEncoder
from .laion import build_model, save_checkpoint

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
