"""The report opens in headless Chromium without script errors and draws every figure.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped with that reason when absent.
The screenshot is saved under ``artifacts/report/`` (gitignored).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from doitray.report import build_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "report"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--virtual-time-budget=30000"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")]


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="doitray-chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               *args], capture_output=True, text=True, timeout=240)


def _status(html_path: Path) -> dict:
    run = _chromium("--dump-dom", html_path.as_uri())
    m = re.search(r"<div id=\"doitray-status\"([^>]*)>([^<]*)<", run.stdout)
    assert m, f"no status element in the rendered DOM; stderr tail: {run.stderr[-2000:]}"
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))
    console = [l for l in run.stderr.splitlines() if "CONSOLE" in l and ("Uncaught" in l or "Error" in l)]
    return {**attrs, "text": m.group(2), "console": console}


@pytest.mark.parametrize("store", ["study_store", "partial_store", "dmt_paper_store"])
def test_report_renders_in_chromium(store, request, tmp_path):
    root = request.getfixturevalue(store)
    out = tmp_path / f"{store}.html"
    info = build_report(str(root), str(out))
    st = _status(out)
    assert st["done"] == "1", st["text"]
    assert int(st["expected"]) == len(info.figures) > 0
    assert st["rendered"] == st["expected"], st["text"]
    assert st["errors"] == "0" and not st["console"], (st["text"], st["console"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{store}.png"
    _chromium("--window-size=1400,2400", f"--screenshot={shot}", out.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000
