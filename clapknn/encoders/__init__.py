"""Encode: the models that turn snippets into vectors.

- ``features`` (:class:`~clapknn.encoders.features.FeaturesEncoder`): weights-free MIR features.
- ``clap`` (:class:`~clapknn.encoders.clap.ClapEncoder`): the frozen LAION-CLAP audio encoder.

Use :func:`get_encoder` to build one by name; heavy imports happen only then.
"""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from .base import Encoder, l2_normalize

__all__ = ["Encoder", "ENCODERS", "get_encoder", "encoder_from_identity", "l2_normalize"]

#: Registered encoder names.
ENCODERS = ("features", "clap")


def get_encoder(name: str = "features", **kwargs: Any) -> Encoder:
    """Build the encoder called ``name`` with its keyword settings.

    Raises
    ------
    ParameterError
        For an unknown name.
    """
    if name == "features":
        from .features import FeaturesEncoder

        return FeaturesEncoder(**kwargs)
    if name == "clap":
        from .clap import ClapEncoder

        return ClapEncoder(**kwargs)
    raise ParameterError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


def encoder_from_identity(identity: dict[str, Any], **overrides: Any) -> Encoder:
    """Rebuild the encoder an index was made with from its recorded identity.

    ``overrides`` (e.g. ``checkpoint=`` for a local copy, ``device=``) are passed on.
    """
    name = identity.get("name")
    if name == "features":
        return get_encoder("features", sample_rate=int(identity.get("sample_rate", 22050)), **overrides)
    if name == "clap":
        kwargs = {"checkpoint": identity.get("checkpoint")}
        kwargs.update(overrides)
        return get_encoder("clap", **kwargs)
    raise ParameterError(f"index was built with unknown encoder {name!r}")
