"""The one exception tree of clapknn.

Every error a user can cause (bad paths, unreadable audio, malformed label files, an index that does
not match the encoder) is a :class:`ClapknnError`, so callers and the CLI catch one type and print
its message without a traceback.
"""

from __future__ import annotations

__all__ = [
    "ClapknnError",
    "ParameterError",
    "AudioError",
    "LabelError",
    "IndexFormatError",
    "EncoderMismatchError",
    "CheckpointError",
    "FileTagError",
    "first_line",
]


class ClapknnError(Exception):
    """Root of every error clapknn raises on purpose."""


class ParameterError(ClapknnError, ValueError):
    """A parameter has a value outside the allowed ones."""


class AudioError(ClapknnError):
    """A file could not be decoded as audio, or its samples are unusable."""


class LabelError(ClapknnError):
    """A set of labelled examples (folder or CSV) is malformed or empty."""


class IndexFormatError(ClapknnError):
    """An index directory is missing, incomplete, tampered with or of an unknown format."""


class EncoderMismatchError(ClapknnError):
    """The encoder used for a query differs from the one that built the index."""


class CheckpointError(ClapknnError):
    """A model checkpoint is missing, corrupt or does not fit the requested architecture."""


class FileTagError(ClapknnError):
    """The tags inside an audio file cannot be read or written (unsupported format, unreadable tags)."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (its type's name when it has none): how a
    library's error is quoted in one line of ours."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
