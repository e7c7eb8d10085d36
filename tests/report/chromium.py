"""Headless Chromium helpers for tests: find the browser, run it offline, count decoded images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

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


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
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


def decoded_images(html: Path, tmp: Path) -> tuple[int, int, str]:
    """(decoded, total, dom) for the <img> elements of `html` once the page has loaded."""
    browser = find_chromium()
    probe = tmp / "probe.html"
    probe.write_text(html.read_text().replace("</body>", PROBE + "\n</body>", 1))
    proc = run_chromium(browser, tmp, "--dump-dom", probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"IMAGES (\d+)/(\d+)", proc.stdout)
    assert m, f"probe did not run; stderr: {proc.stderr[-1500:]}"
    return int(m.group(1)), int(m.group(2)), proc.stdout
