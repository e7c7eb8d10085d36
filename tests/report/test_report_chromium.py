"""Open a generated report in headless Chromium: the page loads and EVERY image decodes.

Skipped when no Chromium is installed (`apt-get install chromium`; CI installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from imagenette_lab.report import build_report
from tests.report.fake_runs import big_png, make_reproduce_out, make_train

# Written into the DOM on load: how many <img> decoded (complete with a natural width) of how many.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var p = document.createElement('p');
  p.id = 'img-probe';
  p.textContent = 'IMAGES ' + ok + '/' + imgs.length;
  document.body.appendChild(p);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _run(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars",
        # Any attempt to reach the network fails: the report must not need it.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp / 'profile'}", *args,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 90 s")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, int]:
    tmp = tmp_path_factory.mktemp("chromium_report")
    out = make_reproduce_out(tmp / "out")
    # An incomplete run and a corrupt figure as well: broken files must never become broken <img>.
    make_train(tmp / "out" / "exp2_partial", pretrained=False, acc=0.6, complete=False)
    (out / "exp3_transfer" / "eval" / "top_losses.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    big_png(out / "exp2_scratch" / "eval" / "top_losses.png")  # embedded re-encoded as JPEG
    result = build_report([out], tmp / "report.html")
    assert result["images"] >= 17
    return tmp / "report.html", result["images"]


def test_every_image_decodes(report, tmp_path: Path) -> None:
    browser = _chromium()
    html, n_images = report
    probe = tmp_path / "probe.html"
    probe.write_text(html.read_text().replace("</body>", PROBE + "\n</body>", 1))
    proc = _run(browser, tmp_path, "--dump-dom", probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"IMAGES (\d+)/(\d+)", proc.stdout)
    assert m, f"probe did not run; stderr: {proc.stderr[-1500:]}"
    ok, total = int(m.group(1)), int(m.group(2))
    assert total == n_images
    assert ok == total, f"only {ok} of {total} images decoded"
    assert "Our results vs the study" in proc.stdout


def test_screenshot_is_non_trivial(report, tmp_path: Path) -> None:
    browser = _chromium()
    html, _ = report
    shot = tmp_path / "shot.png"
    proc = _run(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, tables, figures: not a blank page
        # Mostly white page, but far from all white.
        white = sum(c for c, px in colours if px == (255, 255, 255))
        assert 0.2 < white / (1280 * 2000) < 0.98
