"""``clapknn serve`` in a real browser: headless Chromium (the system's package) driven by Playwright.

Loads the page, plays a track (the audio element gets data), labels a track with a new tag and sees
its neighbours' tags change, undoes it, and checks that a traversal request and a request without
the session's token are refused. Screenshots go to ``$CLAPKNN_SCREENSHOTS`` when set (the README's
come from ``CLAPKNN_SCREENSHOTS=docs/img``), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web extra (starlette, uvicorn) is not installed: pip install 'clapknn[web]'")
pytest.importorskip("uvicorn", reason="the web extra (starlette, uvicorn) is not installed: pip install 'clapknn[web]'")
pytest.importorskip("playwright", reason="playwright is not installed: pip install 'clapknn[dev]'")

from conftest import make_examples, tone, write_audio  # noqa: E402


def chromium_path() -> str | None:
    """The system's Chromium (Debian's ``chromium`` package), never a browser Playwright downloads."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium executable (install Debian's package: apt-get install chromium; ./setup.sh does it as root)"
)

#: A small library a curator might have: two folders close to the index's moods, one in between.
LIBRARY = {
    "Evening": ("Slow drift", 118.0, 60.0),
    "Workout": ("Run", 850.0, 150.0),
    "Unsorted": ("Track", 330.0, 100.0),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """``clapknn serve`` on a free loopback port over a fresh index and library."""
    import uvicorn

    from clapknn import build_index
    from clapknn.webapp.app import create_app
    from clapknn.webapp.session import Curator

    build_index(make_examples(tmp_path / "examples", per_tag=2, seconds=4.0), tmp_path / "index", snippet_seconds=2.0)
    for j, (folder, (title, freq, bpm)) in enumerate(LIBRARY.items()):
        for i in range(4):
            write_audio(tmp_path / "Music" / folder / f"{title} {i + 1}.wav",
                        tone(freq * (1 + 0.01 * i), 4.0, seed=10 * j + i, pulse_bpm=bpm))
    curator = Curator(tmp_path / "index", tmp_path / "Music", k=3, cache=False)
    curator.start()
    port = free_port()
    config = uvicorn.Config(create_app(curator), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}", tmp_path
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 860})
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.errors = errors
        yield pg
        browser.close()


def shot(pg, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("CLAPKNN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / f"webapp-{name}.png"))


def row_top(pg, name: str) -> str:
    return pg.locator("#rows tr", has_text=name).locator("td.top").inner_text().split()[0]


def test_curator_loop_in_a_real_browser(server, page):
    url, tmp = server
    page.goto(url + "/")
    page.wait_for_selector("#rows tr", timeout=60_000)
    expect_rows = 12
    page.wait_for_function(f"() => document.querySelectorAll('#rows tr').length === {expect_rows}")
    assert "12 tracks" in page.inner_text("#counts")
    before = {f"Track {i}.wav": row_top(page, f"Track {i}.wav") for i in range(1, 5)}
    assert set(before.values()) <= {"calm", "energetic"}
    shot(page, "library", tmp)

    # listen: the track's audio element and the snippet's get data through range requests
    page.locator("#rows tr", has_text="Track 1.wav").click()
    page.wait_for_selector("#why li")
    assert page.inner_text("#d-name") == "Unsorted/Track 1.wav"
    page.evaluate("document.getElementById('track-audio').play()")
    page.wait_for_function(
        "() => { const a = document.getElementById('track-audio'); return a.readyState >= 2 && a.buffered.length > 0 && a.currentTime > 0; }",
        timeout=20_000,
    )
    page.evaluate("document.getElementById('snippet-audio').load()")
    page.wait_for_function("() => document.getElementById('snippet-audio').readyState >= 1", timeout=20_000)
    start = page.evaluate("document.getElementById('snippet-audio').currentTime")
    snippet_start = float(page.inner_text("#snippet-label").split("voted ")[1].split(" s")[0])
    assert abs(start - snippet_start) < 0.05  # the player starts at the snippet that voted
    page.evaluate("document.getElementById('track-audio').pause()")
    assert page.locator("#why li audio").count() >= 1
    shot(page, "track", tmp)

    # a new tag: the track becomes an example and its three neighbours follow at once
    page.fill("#new-tag", "dreamy")
    page.click("#add-tag")
    page.wait_for_selector("#changed-list li")
    changed = page.inner_text("#message")
    assert "is now an example of dreamy" in changed
    page.wait_for_function("() => document.querySelectorAll('#rows tr.changed').length >= 3")
    for i in range(1, 5):
        assert row_top(page, f"Track {i}.wav") == "dreamy"
    assert row_top(page, "Run 1.wav") == "energetic"
    assert "dreamy" in page.inner_text("#head")
    shot(page, "after-label", tmp)

    # undo: the tags come back
    page.click("#undo")
    page.wait_for_function("() => document.getElementById('message').innerText.includes('undone')")
    page.wait_for_function("() => !document.getElementById('head').innerText.includes('dreamy')")
    for name, tag in before.items():
        assert row_top(page, name) == tag
    assert page.is_disabled("#undo")

    # the label-next queue
    page.click("#tab-queue")
    page.wait_for_function("() => document.getElementById('page-info').innerText.includes('to label next')")
    assert page.locator("#rows tr").count() == 10
    shot(page, "queue", tmp)

    # refused: a path out of the library, and a state change without the token
    assert page.request.get(url + "/audio/track/..%2F..%2Findex%2Fmanifest.json").status == 403
    status = page.evaluate(
        "fetch('/api/label', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({id: 0, tags: ['x']})}).then(r => r.status)"
    )
    assert status == 403
    assert page.errors == []


def test_missing_index_page_says_what_to_do(tmp_path, page):
    import uvicorn

    from clapknn.webapp.app import create_app
    from clapknn.webapp.session import Curator

    (tmp_path / "Music").mkdir()
    curator = Curator(tmp_path / "no-index", tmp_path / "Music", cache=False)
    curator.start()
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(curator), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        while not srv.started:
            time.sleep(0.05)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#missing:not([hidden])")
        text = page.inner_text("#missing")
        assert "no index at" in text and "clapknn build" in text
        shot(page, "missing", tmp_path)
    finally:
        srv.should_exit = True
        thread.join(10)
