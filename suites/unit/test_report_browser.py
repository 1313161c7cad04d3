"""The report renders in a real browser: headless Chromium loads every image and draws the page.

The page's own script writes ``data-images-total`` and ``data-images-loaded`` on <body> once
the page has loaded (an image counts as loaded when it decoded to a non-zero width).
Chromium's ``--dump-dom`` prints the DOM after scripts ran, so the counts can be read
back.  A page with one corrupt image proves the check can fail.  Skipped without Chromium.
Runs by default: it takes a few seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from suites.support.grid_fixtures import decode_png, png_size, tiny_run

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"),
]


def chromium(tmp_path, *args, timeout=90) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def image_counts(tmp_path, page) -> tuple[int, int]:
    res = chromium(tmp_path, "--dump-dom", page.as_uri())
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, f"no DOM from chromium (exit {res.returncode}): {res.stderr[-2000:]}"
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    assert total and loaded, f"the page's load script did not run: {body.group(0)}"
    return int(total.group(1)), int(loaded.group(1))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    return tiny_run(tmp_path_factory)[0] / "index.html"


def test_every_image_loads(page, tmp_path):
    n_img = page.read_text().count("<img ")
    total, loaded = image_counts(tmp_path, page)
    assert total == n_img > 0
    assert loaded == total


def test_a_broken_image_is_detected(page, tmp_path):
    """The counting script is not a rubber stamp: one corrupt data URI shows up as not loaded."""
    text = page.read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{0,40}', 'src="data:image/png;base64,AAAA', text, count=1)
    assert broken != text
    bad = tmp_path / "broken.html"
    bad.write_text(broken)
    total, loaded = image_counts(tmp_path, bad)
    assert loaded == total - 1


def test_screenshot_shows_the_page(page, tmp_path):
    shot = tmp_path / "report.png"
    res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert shot.is_file(), f"no screenshot (exit {res.returncode}): {res.stderr[-2000:]}"
    data = shot.read_bytes()
    assert png_size(data) == (1280, 2400)
    img = decode_png(data)[..., :3]
    ink = (img < 0.9).any(axis=-1)  # not (near-)white
    colour = np.ptp(img, axis=-1) > 0.2  # saturated pixels: the table highlights and heatmaps
    assert ink.mean() > 0.03, "the screenshot is (nearly) blank"
    assert colour.mean() > 0.01, "no coloured figure or highlighted cell is visible"
    q = (img * 15).astype(np.int32).reshape(-1, 3)  # colours on a 16-level grid
    assert len(np.unique(q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2])) > 50
