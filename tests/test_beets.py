"""The beets plugin, run as a beets user runs it: a temporary beets library (``BEETSDIR`` in a tmp
folder), files imported with ``beet import -A``, the plugin driven through the ``beet`` command of
this environment, results checked with ``beet ls`` queries and in the files with mutagen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import STYLES, make_examples, tone, write_audio

pytest.importorskip("beets", reason="beets is not installed (pip install 'clapknn[beets]' or the dev extra)")

REPO = Path(__file__).resolve().parents[1]
SR = 22050


def _beet_command() -> list[str]:
    """The ``beet`` script next to this Python (as a user types it), else ``python -m beets``."""
    script = Path(sys.executable).with_name("beet")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "beets"]


def _write_m4a(path: Path, y, sr: int = SR) -> Path:
    """AAC in an MP4 container (FFmpeg through PyAV: libsndfile cannot write it)."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=sr, layout="mono")
        stream.codec_context.open()
        frame = av.AudioFrame.from_ndarray(np.asarray(y, dtype=np.float32)[None, :], format="fltp", layout="mono")
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=sr,
                                      frame_size=stream.codec_context.frame_size or None)
        for fr in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(fr):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _song(tag: str, seed: int):
    style = STYLES[tag]
    return tone(style["freq"] * (1 + 0.01 * seed), 6.0, SR, seed=10 + seed, pulse_bpm=style["pulse_bpm"])


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    """A features index of the two synthetic moods (calm, energetic), built once."""
    from clapknn import build_index

    root = tmp_path_factory.mktemp("beets-index")
    build_index(make_examples(root / "examples"), root / "index", snippet_seconds=2.0)
    return root / "index"


class Beets:
    """A temporary beets set-up: its config, library, music folder and a ``beet`` runner."""

    def __init__(self, root: Path, index: Path, **plugin_config) -> None:
        self.root = root
        self.music = root / "music"
        self.beetsdir = root / "beetsdir"
        self.cache = root / "cache"
        self.third = ""  # the third song's file name, set by beets_setup
        self.beetsdir.mkdir(parents=True)
        self.configure(index=str(index), scores=True, **plugin_config)
        self.env = dict(os.environ)
        self.env.update(
            BEETSDIR=str(self.beetsdir), HF_HUB_OFFLINE="1", CLAPKNN_EMBEDDING_CACHE=str(self.cache),
            HOME=str(root),  # nothing of the user's own beets set-up is read
            # this checkout's beetsplug/ and clapknn (an installed clapknn[beets] needs no PYTHONPATH)
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        )

    def configure(self, **plugin_config) -> None:
        import yaml

        config = {
            "directory": str(self.music), "library": str(self.beetsdir / "library.db"), "plugins": ["clapknn"],
            "import": {"copy": False, "move": False, "write": False},
            "clapknn": plugin_config,
        }
        (self.beetsdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def beet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*_beet_command(), *args], env=self.env, cwd=self.root, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"beet {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def ls(self, query: str, fmt: str = "$path") -> list[str]:
        out = self.beet("ls", "-f", fmt, *query.split()).stdout
        return sorted(line for line in out.splitlines() if line.strip())

    def import_music(self) -> None:
        self.beet("import", "-A", "-q", str(self.music))


@pytest.fixture
def beets_setup(tmp_path, index_dir) -> Beets:
    """Three untagged songs (FLAC and M4A or Ogg calm, MP3 energetic) imported into a fresh library."""
    from clapknn.audio.fallback import ffmpeg_available

    b = Beets(tmp_path, index_dir)
    write_audio(b.music / "album" / "calm_one.flac", _song("calm", 1), SR)
    write_audio(b.music / "album" / "loud_two.mp3", _song("energetic", 2), SR, format="MP3")
    # the third: an M4A where ffmpeg can decode it (most players' libraries hold them), else Ogg
    # Vorbis (libsndfile reads it), so that every journey below runs either way
    if ffmpeg_available():
        b.third = _write_m4a(b.music / "album" / "calm_three.m4a", _song("calm", 3)).name
    else:
        b.third = write_audio(b.music / "album" / "calm_three.ogg", _song("calm", 3), SR, format="OGG",
                              subtype="VORBIS").name
    b.import_music()
    assert len(b.ls("")) == 3
    return b


def _raw_mood(path: Path) -> list[str]:
    """The mood values exactly as stored in the file, read with mutagen (not through clapknn or beets)."""
    import mutagen

    audio = mutagen.File(str(path))
    if audio.tags is None:
        return []
    if path.suffix == ".mp3":
        return [str(v) for frame in audio.tags.getall("TMOO") for v in frame.text]
    if path.suffix in (".flac", ".ogg"):
        return list(audio.tags.get("MOOD", []))
    return [bytes(v).decode("utf-8") for v in audio.tags.get("----:com.apple.iTunes:MOOD", [])]


def test_beet_clapknn_tags_the_library_and_ls_finds_moods(beets_setup):
    b = beets_setup
    proc = b.beet("clapknn")
    assert "tagged 3 item(s); 0 already tagged" in proc.stdout
    calm = [str(b.music / "album" / n) for n in ("calm_one.flac", b.third)]
    assert b.ls("mood:calm") == sorted(calm)
    assert b.ls("mood:energetic") == [str(b.music / "album" / "loud_two.mp3")]
    assert b.ls("mood_source:clapknn") == b.ls("")
    # scores are typed numbers, so beets' range queries work on them
    assert b.ls("mood_score_calm:0.5..") == sorted(calm)
    assert b.ls("mood_score_energetic:..0.5") == sorted(calm)
    scores = b.ls("mood:calm", "$mood_score")
    assert all(0.5 <= float(s) <= 1.0 for s in scores)
    # without --write the files are left alone
    for name in ("calm_one.flac", "loud_two.mp3", b.third):
        assert _raw_mood(b.music / "album" / name) == []
    # the embeddings went through clapknn's cache
    from clapknn.embedding.cache import EmbeddingCache

    assert EmbeddingCache(b.cache).stats()["entries"] >= 3


def test_second_run_skips_what_is_done_and_force_tags_again(beets_setup):
    b = beets_setup
    b.beet("clapknn")
    before = b.ls("", "$path $mood $mood_score")
    proc = b.beet("clapknn")
    assert "tagged 0 item(s); 3 already tagged" in proc.stdout
    assert b.ls("", "$path $mood $mood_score") == before
    proc = b.beet("clapknn", "--force", "mood:energetic")
    assert "tagged 1 item(s)" in proc.stdout
    assert b.ls("mood:energetic") == [str(b.music / "album" / "loud_two.mp3")]


def test_write_puts_the_moods_into_the_files(beets_setup):
    b = beets_setup
    # a dry run shows the change and neither stores nor writes it
    proc = b.beet("clapknn", "--dry-run", "-w")
    assert "would set" in proc.stdout and "would tag 3 item(s)" in proc.stdout and "would write 3 file(s)" in proc.stdout
    assert b.ls("mood_source:clapknn") == []
    assert _raw_mood(b.music / "album" / "calm_one.flac") == []

    proc = b.beet("clapknn", "-w")
    assert "tagged 3 item(s); 0 already tagged" in proc.stdout and "wrote 3 file(s)" in proc.stdout
    album = b.music / "album"
    assert _raw_mood(album / "calm_one.flac") == ["calm"]        # Vorbis comment MOOD
    assert _raw_mood(album / "loud_two.mp3") == ["energetic"]    # ID3 TMOO
    assert _raw_mood(album / b.third) == ["calm"]      # MP4 ----:com.apple.iTunes:MOOD, or Vorbis MOOD
    # the same fields clapknn tag --write reads and writes
    from clapknn.players import read_tags

    assert read_tags(album / b.third) == ["calm"]
    # beets reads them back from the files too
    b.beet("update")
    assert b.ls("mood:calm") == sorted(str(album / n) for n in ("calm_one.flac", b.third))
    # files that hold their moods already are not written again
    assert "wrote 0 file(s)" in b.beet("clapknn", "-w").stdout


def test_write_after_a_run_without_it_writes_the_stored_moods(beets_setup):
    b = beets_setup
    b.beet("clapknn")
    assert _raw_mood(b.music / "album" / "loud_two.mp3") == []
    proc = b.beet("clapknn", "-w")  # nothing is tagged again; the files get what the library holds
    assert "tagged 0 item(s); 3 already tagged" in proc.stdout and "wrote 3 file(s)" in proc.stdout
    assert _raw_mood(b.music / "album" / "loud_two.mp3") == ["energetic"]
    assert _raw_mood(b.music / "album" / b.third) == ["calm"]


def test_a_field_set_by_hand_is_kept_unless_force(beets_setup):
    b = beets_setup
    flac = str(b.music / "album" / "calm_one.flac")
    b.beet("modify", "-y", "mood=party", f"path:{flac}")
    proc = b.beet("clapknn", "-w")
    assert "tagged 2 item(s); 0 already tagged, 1 set by hand (left alone)" in proc.stdout
    assert b.ls("mood:party") == [flac]
    assert _raw_mood(Path(flac)) == []  # neither the library nor the file changed
    proc = b.beet("clapknn", "-w", "--force", f"path:{flac}")
    assert "tagged 1 item(s)" in proc.stdout
    assert b.ls("mood:party") == [] and flac in b.ls("mood:calm")
    assert _raw_mood(Path(flac)) == ["calm"]


def test_a_mood_already_in_the_file_counts_as_set_by_hand(tmp_path, index_dir):
    from clapknn.players import write_tags

    b = Beets(tmp_path, index_dir)
    song = write_audio(b.music / "a" / "calm_song.flac", _song("calm", 4), SR)
    assert write_tags(song, ["dreamy"]).status == "written"
    b.import_music()
    assert b.ls("mood:dreamy") == [str(song)]  # read from the file on import
    proc = b.beet("clapknn", "-w")
    assert "1 set by hand (left alone)" in proc.stdout
    assert _raw_mood(song) == ["dreamy"]


def test_an_unreadable_item_is_logged_and_the_run_goes_on(beets_setup):
    b = beets_setup
    broken = b.music / "album" / "loud_two.mp3"
    broken.write_bytes(b"\x00" * 1000)  # the file went bad after import
    proc = b.beet("clapknn", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "tagged 2 item(s)" in proc.stdout and "1 failed" in proc.stdout
    assert "clapknn: " in proc.stderr and "loud_two.mp3: not tagged" in proc.stderr
    assert len(b.ls("mood:calm")) == 2


def test_auto_tags_on_import_and_writes_when_configured(tmp_path, index_dir):
    b = Beets(tmp_path, index_dir)
    b.configure(index=str(index_dir), auto=True, write=True)
    song = write_audio(b.music / "b" / "fast.flac", _song("energetic", 5), SR)
    b.import_music()
    assert b.ls("mood:energetic") == [str(song)]
    assert _raw_mood(song) == ["energetic"]


def test_no_index_configured_is_one_clear_error(tmp_path, index_dir):
    b = Beets(tmp_path, index_dir)
    b.configure(field="mood")
    proc = b.beet("clapknn", check=False)
    assert proc.returncode != 0
    assert "no index configured; set clapknn.index" in proc.stderr
    assert "Traceback" not in proc.stderr
