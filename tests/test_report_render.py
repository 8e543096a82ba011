"""The report renders in a real browser (headless Chromium; skipped where none is installed)."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fracsurv.report.html import Report

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (docs/report.md)")
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.fill_between([0, 1], [0, 0], [1, 1], color="black")  # a black square to find
    rep = Report("render check", banner="SIMULATED DATA")
    rep.section("Numbers", "numbers")
    rep.add_table(pd.DataFrame({"p": [0.0001, 0.2]}, index=["a", "b"]), caption="p values")
    rep.add_figure(fig, caption="a black square")
    page = rep.write(tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    run = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--screenshot={shot}", "--window-size=1000,1400",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), run.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"), float)
    assert px.std() > 10  # not a blank page
    assert (px < 30).mean() > 0.01  # the inlined figure's black square was decoded and drawn
    dom = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "&lt;0.001" in dom or "<0.001" in dom  # the one p format, as the browser parsed it
