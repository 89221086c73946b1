"""The report page of ``swell simulate --compare --report`` rendered once in headless Chromium.

Skipped cleanly where no Chromium is installed.  Chromium runs with no network
features and its own throw-away profile; the page must render offline.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from swell_command import swell_command  # type: ignore[import-not-found]

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")) if p and Path(p).exists()),
    None,
)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (/usr/bin/chromium)")
def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    run = subprocess.run(
        [*swell_command(), "simulate", "steps:rates=0.2/3/0.2,step=5m", "--compare", "--max-replica", "5",
         "--predict-concurrency", "2", "--report", str(page)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == 0, run.stderr
    shot = tmp_path / "shot.png"
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1100,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1100, 2400)
    # A blank page compresses to a few kB; the table and the plots do not.
    assert len(data) > 30_000, len(data)
