"""Tags written into audio files: read back by mutagen and by FFmpeg, audio untouched, problems reported."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import av
import mutagen
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clapknn.cli import main
from clapknn.errors import FileTagError, ParameterError
from clapknn.audio.digests import audio_digest
from clapknn.players import STATUSES, read_tags, write_tags, write_track_tags

SR = 44100  # Hz


def _signal(seconds: float = 1.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)


def _write_pyav(path: Path, fmt: str, codec: str, bit_rate: int | None = None) -> None:
    """Encode a short tone with FFmpeg (through PyAV): the codecs libsndfile cannot write."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=SR, layout="mono")
        if bit_rate:
            stream.codec_context.bit_rate = bit_rate
        stream.codec_context.open()
        sample_fmt = stream.codec_context.format.name
        frame = av.AudioFrame.from_ndarray(_signal()[None, :], format="fltp", layout="mono")
        frame.sample_rate = SR
        resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=SR, frame_size=stream.codec_context.frame_size or None)
        for fr in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(fr):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _make(path: Path) -> Path:
    ext = path.suffix
    if ext == ".opus":
        sf.write(str(path), _signal(sr=48000), 48000, format="OGG", subtype="OPUS")
    elif ext in (".mp3", ".flac", ".ogg", ".wav", ".aiff"):
        sf.write(str(path), _signal(), SR)
    elif ext == ".m4a":
        _write_pyav(path, "ipod", "aac")
    elif ext == ".wma":
        _write_pyav(path, "asf", "wmav2", bit_rate=64000)
    elif ext == ".wv":
        _write_pyav(path, "wv", "wavpack")
    elif ext == ".aac":
        _write_pyav(path, "adts", "aac")
    else:
        raise ValueError(ext)
    return path


# extension -> (mutagen type, container named in the change, raw key to read back with mutagen)
FORMATS = {
    ".mp3": ("MP3", "ID3v2.4 TMOO", "TMOO"),
    ".flac": ("FLAC", "Vorbis comment MOOD", "MOOD"),
    ".ogg": ("OggVorbis", "Vorbis comment MOOD", "MOOD"),
    ".opus": ("OggOpus", "Vorbis comment MOOD", "MOOD"),
    ".m4a": ("MP4", "MP4 ----:com.apple.iTunes:MOOD", "----:com.apple.iTunes:MOOD"),
    ".wav": ("WAVE", "ID3v2.4 TMOO", "TMOO"),
    ".aiff": ("AIFF", "ID3v2.4 TMOO", "TMOO"),
    ".wma": ("ASF", "ASF WM/Mood", "WM/Mood"),
    ".wv": ("WavPack", "APEv2 Mood", "Mood"),
}


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """One untagged file per format, made once; tests work on copies."""
    root = tmp_path_factory.mktemp("originals")
    return {ext: _make(root / f"tone{ext}") for ext in [*FORMATS, ".aac"]}


@pytest.fixture
def copy_of(originals, tmp_path):
    def _copy(ext: str, name: str = "song") -> Path:
        dst = tmp_path / f"{name}{ext}"
        shutil.copyfile(originals[ext], dst)
        return dst

    return _copy


def _raw_values(path: Path, key: str) -> list[str]:
    """The field read with plain mutagen, not through clapknn."""
    tags = mutagen.File(str(path)).tags
    if key in ("TMOO",):
        return [str(v) for frame in tags.getall(key) for v in frame.text]
    if key.startswith("----:"):
        return [bytes(v).decode("utf-8") for v in tags[key]]
    return [str(v) for v in tags[key]]


def _decoded(path: Path) -> np.ndarray:
    """Every decoded sample, through FFmpeg."""
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().ravel() for f in c.decode(audio=0)])


def _ffmpeg_tags(path: Path) -> dict[str, str]:
    """Tags as FFmpeg (ffprobe, Jellyfin) reports them: container and stream metadata, keys lowercased."""
    with av.open(str(path)) as c:
        md = {k.lower(): v for k, v in c.metadata.items()}
        for s in c.streams:
            md.update({k.lower(): v for k, v in s.metadata.items()})
    return md


@pytest.mark.parametrize("ext", list(FORMATS))
def test_write_reads_back_and_audio_is_untouched(copy_of, ext):
    kind, container, key = FORMATS[ext]
    path = copy_of(ext)
    assert type(mutagen.File(str(path))).__name__ == kind
    digest, samples = audio_digest(path), _decoded(path)
    before_bytes = path.read_bytes()

    change = write_tags(path, "calm;dreamy")

    assert change.status == "written" and change.ok and change.changed
    assert change.before == () and change.after == ("calm", "dreamy")
    assert change.container == container
    assert read_tags(path) == ["calm", "dreamy"]
    assert _raw_values(path, key) == ["calm", "dreamy"]
    assert path.read_bytes() != before_bytes  # something was written ...
    assert audio_digest(path) == digest  # ... but not into the audio
    np.testing.assert_array_equal(_decoded(path), samples)


@pytest.mark.parametrize("ext", [".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav", ".wma"])
def test_ffmpeg_reads_the_mood(copy_of, ext):
    """A second, independent tag reader (FFmpeg, what ffprobe and Jellyfin use) sees the mood."""
    path = copy_of(ext)
    write_tags(path, ["calm", "dreamy"])
    md = _ffmpeg_tags(path)
    value = md.get("mood") or md.get("tmoo") or md.get("wm/mood")
    assert value is not None, md
    # FFmpeg joins Vorbis/MP4 values with ";" and shows only the first value of an ID3/ASF list
    assert value.split(";")[0] == "calm" and set(value.split(";")) <= {"calm", "dreamy"}


def test_mp3_audio_frames_are_the_original_bytes(copy_of):
    """An untagged mp3 is all audio frames: after writing, they follow the new ID3 tag unchanged."""
    path = copy_of(".mp3")
    original = path.read_bytes()
    write_tags(path, ["calm"])
    data = path.read_bytes()
    from mutagen.id3 import ID3

    assert data[:3] == b"ID3"
    assert data[ID3(str(path)).size:] == original


def test_flac_frames_are_the_original_bytes(copy_of):
    path = copy_of(".flac")
    original = path.read_bytes()
    write_tags(path, ["calm"])
    data = path.read_bytes()
    audio_len = len(original) - _flac_frames_offset(original)
    assert audio_len > 1000 and data[-audio_len:] == original[-audio_len:]


def _flac_frames_offset(data: bytes) -> int:
    assert data[:4] == b"fLaC"
    offset = 4
    while True:
        header, length = data[offset], int.from_bytes(data[offset + 1 : offset + 4], "big")
        offset += 4 + length
        if header & 0x80:
            return offset


def test_existing_moods_are_kept_and_merged(copy_of):
    path = copy_of(".flac")
    f = mutagen.File(str(path))
    f["MOOD"] = ["Happy"]
    f["TITLE"] = ["My song"]
    f.save()

    change = write_tags(path, ["happy", "calm"])  # "happy" is already there, in another case

    assert change.before == ("Happy",) and change.after == ("Happy", "calm")
    assert read_tags(path) == ["Happy", "calm"]
    assert mutagen.File(str(path))["TITLE"] == ["My song"]


def test_replace_drops_the_old_values_only(copy_of):
    path = copy_of(".mp3")
    from mutagen.id3 import ID3, TIT2, TMOO

    tags = ID3()
    tags.add(TIT2(encoding=3, text=["My song"]))
    tags.add(TMOO(encoding=3, text=["Happy"]))
    tags.save(str(path))

    change = write_tags(path, "calm", replace=True)

    assert change.before == ("Happy",) and change.after == ("calm",)
    assert read_tags(path) == ["calm"]
    assert str(ID3(str(path))["TIT2"]) == "My song"


def test_id3v23_file_keeps_its_version_and_frames(copy_of):
    path = copy_of(".mp3")
    from mutagen.id3 import ID3, TIT2, TYER

    tags = ID3()
    tags.add(TIT2(encoding=1, text=["Old tagger"]))
    tags.add(TYER(encoding=1, text=["1999"]))
    tags.update_to_v23()
    tags.save(str(path), v2_version=3)
    assert ID3(str(path)).version[:2] == (2, 3)

    change = write_tags(path, ["calm", "dreamy"])

    assert change.status == "written" and change.container == "ID3v2.3 TMOO"
    reread = ID3(str(path), translate=False)
    assert reread.version[:2] == (2, 3)
    assert "TYER" in reread and str(reread["TIT2"]) == "Old tagger"
    assert read_tags(path) == ["calm", "dreamy"]


def test_dry_run_writes_nothing(copy_of):
    path = copy_of(".ogg")
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns

    change = write_tags(path, ["calm"], dry_run=True)

    assert change.status == "planned" and change.after == ("calm",)
    assert "would set mood: (none) → calm" in change.describe()
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert read_tags(path) == []


@pytest.mark.parametrize("tags", [["calm"], [], ["", "  "]])
def test_nothing_to_change_leaves_the_file_alone(copy_of, tags):
    path = copy_of(".flac")
    write_tags(path, ["calm"])
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns

    change = write_tags(path, tags)

    assert change.status == "unchanged" and not change.changed and change.ok
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("dry_run", [False, True])
def test_read_only_file_is_reported(copy_of, dry_run):
    path = copy_of(".mp3")
    before = path.read_bytes()
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        change = write_tags(path, ["calm"], dry_run=dry_run)
    finally:
        path.chmod(0o644)
    assert change.status == "read-only" and not change.ok
    assert "read-only" in change.reason and change.after == change.before == ()
    assert path.read_bytes() == before


def test_permission_error_while_saving_is_reported(copy_of, monkeypatch):
    """A file the OS refuses to write (read-only mount, another owner) is reported, not raised."""
    path = copy_of(".flac")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(mutagen.flac.FLAC, "save", refuse)
    change = write_tags(path, ["calm"])
    assert change.status == "read-only" and "Permission denied" in change.reason


def test_unsupported_and_missing_files_are_reported(copy_of, tmp_path):
    adts = copy_of(".aac")  # raw AAC has no tag block
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 20)
    fake = tmp_path / "fake.mp3"
    fake.write_text("not audio at all\n" * 20)
    changes = write_track_tags({adts: "calm", text: "calm", fake: "calm", tmp_path / "gone.flac": "calm"})
    assert [c.status for c in changes] == ["unsupported", "unsupported", "failed", "failed"]
    assert all(not c.ok and c.reason for c in changes)
    assert "AAC" in changes[0].reason and ".txt" in changes[1].reason
    assert "cannot read tags" in changes[2].reason and "no such file" in changes[3].reason
    assert fake.read_text() == "not audio at all\n" * 20
    assert set(c.status for c in changes) <= set(STATUSES)
    with pytest.raises(FileTagError, match="unsupported"):
        read_tags(adts)
    with pytest.raises(FileTagError, match="no such file"):
        read_tags(tmp_path / "gone.flac")


@pytest.mark.parametrize(
    ("field", "ext", "key"),
    [("genre", ".mp3", "TCON"), ("genre", ".flac", "GENRE"), ("genre", ".m4a", "\xa9gen"), ("energy", ".flac", "ENERGY")],
)
def test_other_fields(copy_of, field, ext, key):
    path = copy_of(ext)
    assert write_tags(path, ["Ambient"], field=field).status == "written"
    assert read_tags(path, field=field) == ["Ambient"]
    assert read_tags(path) == []  # the mood field was not touched
    tags = mutagen.File(str(path)).tags
    assert key in tags


def test_custom_field_in_id3_is_a_txxx_frame(copy_of):
    path = copy_of(".mp3")
    write_tags(path, ["high"], field="energy")
    from mutagen.id3 import ID3

    assert ID3(str(path))["TXXX:energy"].text == ["high"]
    assert read_tags(path, field="energy") == ["high"]


@pytest.mark.parametrize("field", ["", "a=b", "x" * 65, "../etc"])
def test_bad_field_name(copy_of, field):
    with pytest.raises(ParameterError, match="tag field"):
        write_tags(copy_of(".flac"), ["calm"], field=field)


def test_write_track_tags_takes_the_tag_table(copy_of):
    a, b = copy_of(".flac", "a"), copy_of(".mp3", "b")
    tracks = pd.DataFrame({"path": [str(a), str(b)], "tags": ["calm;tender", ""], "score": [0.9, 0.1]})
    changes = write_track_tags(tracks)
    assert [c.status for c in changes] == ["written", "unchanged"]
    assert read_tags(a) == ["calm", "tender"] and read_tags(b) == []
    with pytest.raises(ParameterError, match="tags"):
        write_track_tags(tracks[["path"]])


@pytest.mark.parametrize("ext", list(FORMATS))
def test_audio_digest_sees_a_changed_audio_byte(copy_of, ext):
    """The digest covers the audio: one flipped byte mid-file (inside the audio data) changes it."""
    path = copy_of(ext)
    digest = audio_digest(path)
    data = bytearray(path.read_bytes())
    data[int(len(data) * 0.6)] ^= 0xFF
    path.write_bytes(bytes(data))
    assert audio_digest(path) != digest


def test_audio_digest_rejects_what_it_cannot_follow(copy_of, tmp_path):
    with pytest.raises(FileTagError):
        audio_digest(copy_of(".aac"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(FileTagError):
        audio_digest(junk)


# --------------------------------------------------------------------------- CLI
@pytest.fixture
def cli_files(built_index, tmp_path):
    """The session index, plus a calm-sounding mp3 and an energetic flac to tag."""
    from conftest import STYLES, tone

    index, root = built_index
    out = {}
    for name, ext in (("calm", ".mp3"), ("energetic", ".flac")):
        style = STYLES[name]
        path = tmp_path / f"query_{name}{ext}"
        sf.write(str(path), tone(style["freq"] * 1.01, 4.0, 22050, seed=7, pulse_bpm=style["pulse_bpm"]), 22050)
        out[name] = path
    return root / "index", out


def test_cli_dry_run_then_write(cli_files, capsys):
    idx, files = cli_files
    before = {p: p.read_bytes() for p in files.values()}

    code = main(["tag", *map(str, files.values()), "--index", str(idx), "--dry-run", "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "planned file tags (dry run, nothing written)" in out
    assert "would set mood: (none) → calm" in out and "would set mood: (none) → energetic" in out
    assert all(p.read_bytes() == b for p, b in before.items())

    code = main(["tag", *map(str, files.values()), "--index", str(idx), "--write", "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "set mood: (none) → calm" in out
    assert read_tags(files["calm"]) == ["calm"] and read_tags(files["energetic"]) == ["energetic"]
    assert audio_digest(files["calm"]) == audio_digest_of_bytes(before[files["calm"]], files["calm"].suffix)


def audio_digest_of_bytes(data: bytes, suffix: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{suffix}"
        p.write_bytes(data)
        return audio_digest(p)


def test_cli_keeps_existing_moods_unless_replace(cli_files, capsys):
    idx, files = cli_files
    path = files["calm"]
    write_tags(path, ["Nostalgic"])
    assert main(["tag", str(path), "--index", str(idx), "--write", "-q"]) == 0
    assert read_tags(path) == ["Nostalgic", "calm"]
    assert main(["tag", str(path), "--index", str(idx), "--write", "--replace-tags", "-q"]) == 0
    assert read_tags(path) == ["calm"]
    assert main(["tag", str(path), "--index", str(idx), "--write", "--tag-field", "genre", "-q"]) == 0
    assert read_tags(path, field="genre") == ["calm"]
    capsys.readouterr()


def test_cli_reports_read_only_files_and_goes_on(cli_files, capsys):
    idx, files = cli_files
    files["calm"].chmod(0o444)
    try:
        code = main(["tag", *map(str, files.values()), "--index", str(idx), "--write", "-q"])
    finally:
        files["calm"].chmod(0o644)
    captured = capsys.readouterr()
    assert code == 1  # finished, but an input was skipped
    assert "tags not written: read-only file" in captured.err and str(files["calm"]) in captured.err
    assert read_tags(files["calm"]) == [] and read_tags(files["energetic"]) == ["energetic"]


def test_cli_bad_tag_field_fails_before_tagging(cli_files, capsys):
    idx, files = cli_files
    assert main(["tag", str(files["calm"]), "--index", str(idx), "--write", "--tag-field", "a=b"]) == 2
    assert capsys.readouterr().err.startswith("clapknn: error: tag field")
