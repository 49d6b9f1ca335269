"""clapknn: tag music by mood (or any tags) from a handful of labelled examples.

A frozen audio encoder (LAION-CLAP, or a weights-free MIR-features encoder) embeds short snippets,
a FAISS index holds the labelled snippets, and tags come from a nearest-neighbour vote. No gradient
training.

The pipeline, one module per stage: :mod:`~clapknn.audio.decode` → :mod:`~clapknn.audio.snippet` →
:mod:`~clapknn.embedding.encode` (models in :mod:`~clapknn.encoders`) → :mod:`~clapknn.index` →
:mod:`~clapknn.vote` → :mod:`~clapknn.tagging.aggregate`; :mod:`~clapknn.tagging.build` and :mod:`~clapknn.tagging.tagger` tie them together.

Importing clapknn is cheap and has no side effects: the public names below are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "build_index": "tagging.build",
    "load_index": "tagging.tagger",
    "Tagger": "tagging.tagger",
    "TagResult": "tagging.tagger",
    "Index": "index",
    "KNNTagger": "vote",
    "load_examples": "labels",
    "get_encoder": "encoders",
    "Encoder": "encoders",
    "embed_files": "embedding.encode",
    "ClapknnError": "errors",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .embedding.encode import embed_files
    from .encoders import Encoder, get_encoder
    from .errors import ClapknnError
    from .index import Index
    from .labels import load_examples
    from .tagging.tagger import Tagger, TagResult, load_index
    from .tagging.build import build_index
    from .vote import KNNTagger


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clapknn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
