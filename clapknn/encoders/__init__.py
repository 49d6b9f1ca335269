"""Encode: the models that turn snippets into vectors.

- ``features`` (:class:`~clapknn.encoders.features.FeaturesEncoder`): weights-free MIR features.
- ``clap`` (:class:`~clapknn.encoders.clap.ClapEncoder`): the frozen LAION-CLAP audio encoder.

Use :func:`get_encoder` to build one by name; heavy imports happen only then.
"""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from ..options import ENCODERS  # the registered encoder names
from .base import Encoder, l2_normalize

__all__ = [
    "Encoder", "ENCODERS", "RUNTIME_OPTIONS", "get_encoder", "check_encoder_options", "encoder_from_identity", "l2_normalize",
    "track_context",
]



#: Settings that only say how to run a model (not what it computes): an encoder that has no use
#: for one of them ignores it, so e.g. ``--threads`` never breaks a ``features`` index.
RUNTIME_OPTIONS = frozenset({"device", "threads", "allow_download", "tokenizer_path", "cache_dir", "progress"})


def get_encoder(name: str = "features", **kwargs: Any) -> Encoder:
    """Build the encoder called ``name`` with its keyword settings.

    Runtime-only settings (:data:`RUNTIME_OPTIONS`) that the encoder does not take are ignored.

    Raises
    ------
    ParameterError
        For an unknown name, or a setting the encoder does not have.
    """
    return _encoder_class(name)(**check_encoder_options(name, kwargs))


def track_context(identity: dict[str, Any], vectors, tracks, keep):
    """The rows ``keep`` (a boolean mask) of snippet vectors made by the encoder of ``identity``,
    with the track context (:meth:`Encoder.track_context`) of every track that lost rows made again
    from the rows it keeps: what tagging those snippets alone gives. ``tracks`` is each row's track.
    Without a known encoder name in ``identity`` the rows are returned as they are."""
    import numpy as np

    vectors, tracks, keep = np.asarray(vectors), np.asarray(tracks), np.asarray(keep, dtype=bool)
    out = vectors[keep].copy()
    if keep.all() or identity.get("name") not in ENCODERS:  # nothing lost, or no encoder to ask
        return out
    kept_tracks = tracks[keep]
    finish = _encoder_class(identity.get("name", "")).track_context
    for t in np.unique(tracks[~keep]):
        rows = kept_tracks == t
        if rows.any():
            out[rows] = finish(out[rows])
    return out


def _encoder_class(name: str) -> type:
    if name == "features":
        from .features import FeaturesEncoder as cls
    elif name == "clap":
        from .clap import ClapEncoder as cls
    else:
        raise ParameterError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return cls


def check_encoder_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``options`` that the encoder ``name`` takes; a setting it does not have
    (other than a runtime-only one) is refused, even where the encoder would not be built.

    Raises
    ------
    ParameterError
    """
    import inspect

    params = inspect.signature(_encoder_class(name).__init__).parameters
    accepted = {k for k, p in params.items() if k != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(k for k in options if k not in accepted and k not in RUNTIME_OPTIONS)
    if unknown:
        raise ParameterError(
            f"encoder {name!r} has no setting {', '.join(map(repr, unknown))}"
            f" (its settings: {', '.join(sorted(accepted)) or 'none'})"
        )
    return {k: v for k, v in options.items() if k in accepted}


def encoder_from_identity(identity: dict[str, Any], **overrides: Any) -> Encoder:
    """Rebuild the encoder an index was made with from its recorded identity.

    ``overrides`` (e.g. ``checkpoint=`` for a local copy, ``device=``) are passed on. For ``clap``
    the checkpoint file is found by :func:`~clapknn.encoders.clap.locate_checkpoint`: the given
    ``checkpoint``, else the recorded path, else the cache by official name, and only a file with
    the recorded SHA-256 is used.

    Raises
    ------
    CheckpointError
        The given checkpoint holds other weights, or the recorded one is nowhere to be found.
    """
    name = identity.get("name")
    if name == "features":
        return get_encoder("features", sample_rate=int(identity.get("sample_rate", 22050)), **overrides)
    if name == "clap":
        from .clap import locate_checkpoint

        kwargs = dict(overrides)
        kwargs["checkpoint"] = locate_checkpoint(
            identity, kwargs.pop("checkpoint", None),
            allow_download=bool(kwargs.get("allow_download")), cache=kwargs.get("cache_dir"),
        )
        if identity.get("checkpoint_sha256"):
            kwargs.setdefault("checkpoint_sha256", identity["checkpoint_sha256"])
        if identity.get("precision"):  # recorded when not fp32; a given precision must match it
            kwargs.setdefault("precision", identity["precision"])
        return get_encoder("clap", **kwargs)
    raise ParameterError(f"index was built with unknown encoder {name!r}")
