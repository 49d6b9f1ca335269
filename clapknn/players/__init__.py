"""What music players and media servers read from clapknn: tags written into the audio files
themselves, and playlists.

- :mod:`~clapknn.players.tags`: reading and writing a tag field in a file's own metadata with
  mutagen (:func:`read_tags`, :func:`write_tags`, :func:`write_track_tags`), where beets, Picard,
  Jellyfin, Navidrome and TagLib-based players read mood from;
- :mod:`~clapknn.players.playlist`: ``.m3u8`` playlists, one per tag or "more like these".

The audio data's own digest (that writing tags leaves it alone) is
:func:`clapknn.audio.digests.audio_digest`.
"""

from __future__ import annotations

from .playlist import (
    DEFAULT_SIMILAR_TRACKS, Playlist, PlaylistEntry, read_m3u8, read_tag_table, similar_playlist, tag_playlists,
    write_m3u8,
)
from .tags import STANDARD_FIELDS, STATUSES, TagChange, check_field, read_tags, write_tags, write_track_tags

__all__ = [
    "DEFAULT_SIMILAR_TRACKS", "Playlist", "PlaylistEntry", "STANDARD_FIELDS", "STATUSES", "TagChange", "check_field",
    "read_m3u8", "read_tag_table", "read_tags", "similar_playlist", "tag_playlists", "write_m3u8", "write_tags",
    "write_track_tags",
]
