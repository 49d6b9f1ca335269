"""The :class:`Encoder` interface shared by every embedding model.

An encoder turns a batch of equal-length mono snippets at its own sample rate into L2-normalised
float32 vectors. It never cuts or pads audio itself: :mod:`clapknn.audio.snippet` hands it snippets of
exactly ``round(snippet_seconds * sample_rate)`` samples, a track shorter than that filled by the
encoder's :attr:`Encoder.pad` rule, so the same audio always gives the same vector whatever the
batch size or composition.

An identity may carry *location* entries (:data:`LOCATION_KEYS`, e.g. the path a checkpoint was
read from): hints for finding a file again, not part of what the encoder computes, so comparisons
and cache keys leave them out (:func:`comparable_identity`).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

__all__ = ["Encoder", "LOCATION_KEYS", "comparable_identity", "l2_normalize"]

#: Identity entries that only say where a file was found (the file itself is identified by its hash).
LOCATION_KEYS = frozenset({"checkpoint_path"})


def comparable_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` without its :data:`LOCATION_KEYS`: what decides the vectors."""
    return {k: v for k, v in identity.items() if k not in LOCATION_KEYS}


def l2_normalize(x: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """Return float32 rows of ``x`` scaled to unit L2 norm (all-zero rows stay zero).

    Parameters
    ----------
    x : np.ndarray [shape=(n, d)]
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


class Encoder(abc.ABC):
    """Embeds snippets of audio.

    Subclasses set :attr:`name`, :attr:`sample_rate` (Hz) and :attr:`dim`, and implement
    :meth:`embed`. :meth:`identity` must describe everything that changes the vectors, because an
    index refuses queries from an encoder whose identity differs from its own.
    """

    #: Short registry name (``"features"``, ``"clap"``).
    name: str = ""
    #: Sample rate (Hz) the snippets must have.
    sample_rate: int = 0
    #: Length of one embedding vector.
    dim: int = 0
    #: How :mod:`clapknn.audio.snippet` fills a track shorter than one snippet
    #: (:data:`clapknn.audio.snippet.PAD_RULES`): ``"repeat"`` loops it, ``"repeatpad"`` repeats whole
    #: copies, then zeros.
    pad: str = "repeat"
    #: Whether the embedding engine's worker processes run this encoder on the snippets they decode
    #: (:func:`clapknn.embedding.workers.embed_file`): true for an encoder that is cheap to send to
    #: another process and whose work is per snippet on the CPU, with nothing to share (``features``);
    #: false for a model (``clap``), which stays in the calling process while workers only decode.
    encodes_in_workers: bool = False
    #: Modules the worker processes' server imports once for this encoder, so a worker starts with
    #: them loaded (:func:`clapknn.embedding.workers.worker_pool`).
    worker_modules: tuple[str, ...] = ()

    @abc.abstractmethod
    def embed(self, snippets: np.ndarray) -> np.ndarray:
        """Embed a batch of snippets.

        Parameters
        ----------
        snippets : np.ndarray [shape=(n, n_samples)]
            Mono float audio at :attr:`sample_rate`, all of the same length.

        Returns
        -------
        np.ndarray [shape=(n, dim), dtype=float32]
            L2-normalised embeddings, one row per snippet.
        """

    @classmethod
    def track_context(cls, vectors: np.ndarray) -> np.ndarray:
        """The vectors of the snippets read from one track, as the encoder finishes them once it
        has them all: what a vector says about its whole track (e.g. the key of the piece, where
        one snippet's may mislead) is filled in here. A function of those rows alone, applied by
        the embedding engine to every track and again by whoever votes on only some of a track's
        snippets (:func:`clapknn.encoders.track_context`). By default the rows are unchanged.

        Parameters
        ----------
        vectors : np.ndarray [shape=(n, dim)]
            One track's snippet vectors, as :meth:`embed` gave them (or as this method did).

        Returns
        -------
        np.ndarray [shape=(n, dim), dtype=float32]
        """
        return vectors

    def identity(self) -> dict[str, Any]:
        """JSON-serialisable description of the encoder: name plus every setting that changes
        the vectors (and the checkpoint hash when there is one)."""
        return {"name": self.name, "sample_rate": int(self.sample_rate), "dim": int(self.dim)}

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        settings = ", ".join(f"{k}={v!r}" for k, v in self.identity().items() if k != "name")
        return f"{type(self).__name__}({settings})"
