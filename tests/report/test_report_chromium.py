"""Open a generated report in headless Chromium: the page loads and EVERY image decodes.

Skipped when no Chromium is installed (`apt-get install chromium`; CI installs it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from imagenette_lab.report import build_report
from tests.report.chromium import decoded_images, find_chromium, run_chromium
from tests.report.fake_runs import big_png, make_reproduce_out, make_train


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
    html, n_images = report
    ok, total, dom = decoded_images(html, tmp_path)
    assert total == n_images
    assert ok == total, f"only {ok} of {total} images decoded"
    assert "Our results vs the study" in dom


def test_screenshot_is_non_trivial(report, tmp_path: Path) -> None:
    browser = find_chromium()
    html, _ = report
    shot = tmp_path / "shot.png"
    proc = run_chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, tables, figures: not a blank page
        # Mostly white page, but far from all white.
        white = sum(c for c, px in colours if px == (255, 255, 255))
        assert 0.2 < white / (1280 * 2000) < 0.98


NARROW_PROBE = """<script>
window.addEventListener('load', function () {
  var t = document.querySelector('table.compare'), box = t.parentElement;
  var p = document.createElement('p');
  p.id = 'width-probe';
  p.textContent = 'WIDTHS ' + document.documentElement.scrollWidth + ' ' + window.innerWidth + ' ' +
                  t.scrollWidth + ' ' + box.clientWidth;
  document.body.appendChild(p);
});
</script>"""


def test_comparison_table_fits_an_800_px_window(report, tmp_path: Path) -> None:
    """At 800 px the page never scrolls sideways and the comparison table fits without its scrollbar."""
    import re

    browser = find_chromium()
    html, _ = report
    probe = tmp_path / "narrow.html"
    probe.write_text(html.read_text().replace("</body>", NARROW_PROBE + "\n</body>", 1))
    proc = run_chromium(browser, tmp_path, "--window-size=800,1200", "--dump-dom", probe.as_uri())
    m = re.search(r"WIDTHS (\d+) (\d+) (\d+) (\d+)", proc.stdout)
    assert m, proc.stderr[-1500:]
    page, window, table, box = map(int, m.groups())
    assert window == 800 and page <= window
    assert table <= box + 1, f"comparison table {table} px in a {box} px column"
