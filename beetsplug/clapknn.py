"""beets plugin: mood tags (or any tags) from a clapknn index, kept in the beets library.

Enable it in beets' ``config.yaml`` (install with ``pip install "clapknn[beets]"``)::

    plugins: clapknn
    clapknn:
      index: ~/music-index/moods   # a clapknn index (clapknn build EXAMPLES --out ...); required
      k: 5                         # neighbours per snippet
      threshold:                   # minimum score for a tag (empty: the index's default rule)
      top_n:                       # at most N tags per item (empty: the index's default rule)
      field: mood                  # the field the tags go to
      scores: no                   # also store one <field>_score_<tag> per tag of the index
      write: no                    # write the tags into the files (beet clapknn -w does it once)
      auto: no                     # tag new items on import
      cache: yes                   # clapknn's embedding cache: yes (its default folder), no, or a folder

``beet clapknn [QUERY]`` tags the matching items and stores, as flexible attributes,
``mood`` (the tags, ``"; "``-joined, best first), ``mood_score`` (the score of the best tag),
``mood_source: clapknn`` (which marks the value as set by this plugin) and, with ``scores: yes``,
``mood_score_<tag>``. ``beet ls mood:calm`` and smart playlists (``smartplaylist`` queries)
then find the items.

Rules
-----
* Items already tagged by clapknn (``mood_source: clapknn``) are skipped, so a re-run only tags
  new items; ``--force`` tags them again.
* A field set any other way (by hand with ``beet modify``, or read from the file on import) is
  never overwritten unless ``--force``.
* ``-w/--write`` writes the tags into the files through beets (``item.try_write``), also for items
  tagged before whose file does not hold the value yet: ID3 ``TMOO``,
  Vorbis/FLAC ``MOOD``, MP4 ``----:com.apple.iTunes:MOOD``, ASF ``WM/Mood``, APEv2 ``Mood`` —
  the fields ``clapknn tag --write`` uses (:mod:`clapknn.players.tags`), one value per tag.
* ``--dry-run`` (or ``-p/--pretend``) shows what would be set; nothing is stored or written.
* A file that cannot be decoded or written is logged through beets' logger; the run goes on.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from beets import ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin

#: Value of ``<field>_source`` on items whose field this plugin set.
SOURCE = "clapknn"
_BEETS_FIELD = re.compile(r"[a-z][a-z0-9_]{0,63}")


def tag_key(tag: str) -> str:
    """The part of a per-tag score field made from a tag: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", tag.lower()).strip("_") or "tag"


def _split(value) -> list[str]:
    """Tags from a stored value (``"a; b"``) or a list; empty strings dropped."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        parts = str(value).split(";")
    return [p.strip() for p in parts if p.strip()]


def _name(item) -> str:
    """How an item is named in messages: ``artist - title``, else its path."""
    from beets.util import displayable_path

    return f"{item.artist} - {item.title}" if item.title else displayable_path(item.path)


def _media_field(field: str):
    """A mediafile descriptor for ``field`` in the storage clapknn's own ``--write`` uses.

    The value seen by beets is the tags joined with ``"; "``; in the file each tag is a value of
    its own (a list field), as :func:`clapknn.players.write_tags` writes it.
    """
    import mediafile
    from mediafile.storage import ASFStorageStyle, ListStorageStyle, MP3ListDescStorageStyle, MP3ListStorageStyle, MP4ListStorageStyle

    from clapknn.players import STANDARD_FIELDS  # the field of each container, shared with clapknn tag --write

    class JoinedListField(mediafile.ListMediaField):
        """A list field read and set as one ``"; "``-joined string."""

        def __get__(self, mf, owner=None):
            values = super().__get__(mf, owner)
            return "; ".join(_split(values)) or None

        def __set__(self, mf, value):
            super().__set__(mf, _split(value) or None)

    std = STANDARD_FIELDS.get(field)
    if std:
        return JoinedListField(
            MP3ListStorageStyle(std["id3"]), MP4ListStorageStyle(std["mp4"]), ListStorageStyle(std["vorbis"]),
            ASFStorageStyle(std["asf"]),
        )
    return JoinedListField(
        MP3ListDescStorageStyle(desc=field), MP4ListStorageStyle(f"----:com.apple.iTunes:{field}"),
        ListStorageStyle(field.upper()), ASFStorageStyle(field),
    )


class ClapknnPlugin(BeetsPlugin):
    """``beet clapknn``: tag items with a clapknn index (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("clapknn")
        self.config.add(
            {
                "index": None, "k": 5, "threshold": None, "top_n": None, "field": "mood", "scores": False,
                "write": False, "auto": False, "cache": True,
            }
        )
        field = self.config["field"].as_str()
        if not _BEETS_FIELD.fullmatch(field):
            raise ui.UserError(f"clapknn: field must be lower-case letters, digits and '_' (a beets field name), got {field!r}")
        self.field = field
        self._tagger = None
        import mediafile
        from beets.library import Item

        if field not in mediafile.MediaFile.fields():
            if field in Item._fields:
                raise ui.UserError(f"clapknn: {field!r} is a beets field that is not a file tag; choose another field")
            self.add_media_field(field, _media_field(field))
        self.item_types = {f"{field}_score": types.FLOAT}
        if self.config["scores"].get(bool):
            self.item_types.update({self.score_field(t): types.FLOAT for t in self._index_tags()})
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]

    # ------------------------------------------------------------------ names
    def score_field(self, tag: str) -> str:
        """The flexible attribute holding one tag's score."""
        return f"{self.field}_score_{tag_key(tag)}"

    def _index_tags(self) -> list[str]:
        """The index's tags, from its manifest (empty when it cannot be read: the index is checked
        when it is used). Read directly, so that every ``beet`` command stays quick to start."""
        path = self.config["index"].get()
        if not path:
            return []
        try:
            manifest = json.loads((Path(os.path.expanduser(str(path))) / "manifest.json").read_text(encoding="utf-8"))
            return [str(t) for t in manifest.get("tags", [])]
        except (OSError, ValueError, AttributeError):
            return []

    # ------------------------------------------------------------------ beets hooks
    def commands(self):
        cmd = ui.Subcommand("clapknn", help="tag items (mood by default) with a clapknn index")
        cmd.parser.add_option("-w", "--write", action="store_true", dest="write", default=None,
                              help="write the tags into the files")
        cmd.parser.add_option("-W", "--nowrite", action="store_false", dest="write", help="do not write the files")
        cmd.parser.add_option("-n", "--dry-run", "-p", "--pretend", action="store_true", dest="dry_run", default=False,
                              help="show what would be set; store and write nothing")
        cmd.parser.add_option("-f", "--force", action="store_true", default=False,
                              help="tag items already tagged, and replace values set by hand")
        cmd.parser.add_option("--index", help="the clapknn index (overrides clapknn.index)")
        cmd.parser.add_option("-k", type="int", dest="k", help="neighbours per snippet (overrides clapknn.k)")
        cmd.parser.add_option("--threshold", type="float", help="minimum tag score, 0 to 1 (overrides clapknn.threshold)")

        def run(lib, opts, args):
            for name in ("index", "k", "threshold"):
                if getattr(opts, name) is not None:
                    self.config[name].set(getattr(opts, name))
            if not self.config["index"].get():
                raise ui.UserError("clapknn: no index configured; set clapknn.index in config.yaml (or give --index)")
            write = self.config["write"].get(bool) if opts.write is None else opts.write
            counts = self.tag_items(lib.items(args), write=write, force=opts.force, dry_run=opts.dry_run, show=True)
            verb = "would tag" if opts.dry_run else "tagged"
            ui.print_(
                f"clapknn: {verb} {counts['tagged']} item(s); {counts['done']} already tagged, "
                f"{counts['manual']} set by hand (left alone), {counts['failed']} failed"
                + (f"; {'would write' if opts.dry_run else 'wrote'} {counts['written']} file(s)" if write else "")
                + (f", {counts['unwritten']} could not be written" if counts["unwritten"] else "")
            )

        cmd.func = run
        return [cmd]

    def imported(self, session, task) -> None:
        """Import stage (``auto: yes``): tag the items just imported."""
        self.tag_items(task.imported_items(), write=self.config["write"].get(bool), force=False, dry_run=False, show=False)

    # ------------------------------------------------------------------ work
    def tagger(self):
        """The :class:`clapknn.Tagger` of the configured index (built once)."""
        if self._tagger is None:
            from clapknn import ClapknnError, Tagger

            index = self.config["index"].get()
            if not index:
                raise ui.UserError("clapknn: no index configured; set clapknn.index in config.yaml (or give --index)")
            threshold, top_n = self.config["threshold"].get(), self.config["top_n"].get()
            try:
                self._tagger = Tagger(
                    os.path.expanduser(str(index)), k=self.config["k"].get(int),
                    threshold=None if threshold is None else float(threshold), top_n=None if top_n is None else int(top_n),
                )
            except ClapknnError as exc:
                raise ui.UserError(f"clapknn: {exc}") from exc
            for note in self._tagger.notes:
                self._log.info("{}", note)
        return self._tagger

    def _cache(self):
        value = self.config["cache"].get()
        if isinstance(value, bool):
            return value
        return os.path.expanduser(str(value))

    def _file_value(self, item):
        """The field's value in the item's file now (``None`` when unset or unreadable)."""
        import mediafile
        from beets.util import syspath

        try:
            return getattr(mediafile.MediaFile(syspath(item.path)), self.field)
        except Exception:  # noqa: BLE001 - an unreadable file is reported when it is written
            return None

    def _write(self, item, counts: dict[str, int], dry_run: bool) -> None:
        """Write the item's tags into its file through beets (``item.try_write`` logs a failure)."""
        if dry_run:
            counts["written"] += 1
        elif item.try_write():
            counts["written"] += 1
        else:  # the value stays in the library; the file is left as it was
            counts["unwritten"] += 1

    def state(self, item) -> str:
        """``"done"`` (set by clapknn), ``"manual"`` (set some other way) or ``"free"`` (empty)."""
        if item.get(f"{self.field}_source") == SOURCE:
            return "done"
        return "manual" if _split(item.get(self.field)) else "free"

    def tag_items(self, items, *, write: bool, force: bool, dry_run: bool, show: bool) -> dict[str, int]:
        """Tag ``items``; returns counts of ``tagged``, ``done`` (skipped: tagged before), ``manual``
        (skipped: set some other way), ``failed`` (not tagged), ``written`` (files written) and
        ``unwritten`` (tagged in the library, but the file could not be written).

        With ``write``, an item tagged before whose file does not hold its value yet (it was tagged
        without ``--write``) has the file written, without being tagged again."""
        from clapknn import ClapknnError

        counts = {"tagged": 0, "done": 0, "manual": 0, "failed": 0, "written": 0, "unwritten": 0}
        todo = []
        for item in items:
            state = self.state(item)
            if state != "free" and not force:
                counts[state] += 1
                if state == "done" and write and _split(self._file_value(item)) != _split(item.get(self.field)):
                    self._write(item, counts, dry_run)
                if state == "manual":
                    self._log.info("{}: {} is {!r}, not set by clapknn; left alone (--force replaces it)",
                                   _name(item), self.field, item.get(self.field))
                else:
                    self._log.debug("{}: already tagged", _name(item))
                continue
            todo.append(item)
        if not todo:
            return counts
        paths = [os.path.normpath(os.fsdecode(item.path)) for item in todo]
        tagger = self.tagger()
        try:
            result = tagger.tag(paths, cache=self._cache())
        except ClapknnError as exc:  # nothing could be tagged at all (e.g. every file is missing)
            for item in todo:
                self._log.error("{}: not tagged ({})", _name(item), exc)
            counts["failed"] += len(todo)
            return counts
        rows = {os.path.normpath(r["path"]): r for r in result.tracks.to_dict("records")}
        why = {os.path.normpath(str(p)): reason for p, reason in result.skipped}
        for item, path in zip(todo, paths):
            row = rows.get(path)
            if row is None:
                self._log.error("{}: not tagged ({})", _name(item), why.get(path, "no result"))
                counts["failed"] += 1
                continue
            tags = _split(row["tags"])
            new = {self.field: "; ".join(tags), f"{self.field}_score": round(float(row["score"]), 4),
                   f"{self.field}_source": SOURCE}
            if self.config["scores"].get(bool):
                new.update({self.score_field(t): round(float(row[f"score:{t}"]), 4) for t in tagger.tags})
            line = f"{_name(item)}: {self.field} = {new[self.field] or '(none)'} ({new[f'{self.field}_score']:.2f})"
            if dry_run:
                ui.print_(f"would set {line}")
                counts["tagged"] += 1
                counts["written"] += bool(write)
                continue
            item.update(new)
            if write:
                self._write(item, counts, dry_run)
            item.store()
            counts["tagged"] += 1
            if show:
                ui.print_(line)
            else:
                self._log.info("{}", line)
        return counts
