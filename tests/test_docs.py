"""The docs site builds (mkdocs + mkdocstrings + mkdocs-gallery), so it cannot rot."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = r"/(plot_synthetic_cohort|deepsurv_real_data|dask_cluster)\.py"


def _build(tmp_path: Path, pattern: str) -> Path:
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("mkdocs is not installed: it is part of the dev extra (setup.cfg)")
    site = tmp_path / "site"
    env = {**os.environ, "FRACSURV_DOCS_EXAMPLES": pattern, "MPLBACKEND": "Agg",
           "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--site-dir",
                          str(site)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ERROR" not in run.stderr, run.stderr[-3000:]
    return site


def test_docs_site_builds_with_api_reference_and_a_run_example(tmp_path):
    site = _build(tmp_path, FAST)
    for page in sorted((ROOT / "docs").glob("*.md")):
        name = "" if page.stem == "index" else page.stem
        assert (site / name / "index.html").exists(), page.name
    api = (site / "api" / "index.html").read_text()
    # docstrings rendered: a parameter of DicomLoader and of cox_table
    assert "output_shape" in api and "comparisons" in api and "FusionSurvival" in api
    gallery = site / "generated" / "gallery"
    assert (gallery / "images" / "mkd_glr_plot_synthetic_cohort_001.png").stat().st_size > 10_000
    page = (gallery / "deepsurv_real_data" / "index.html").read_text()
    assert "GridSearchCV" in page and "Out" in page  # the script's printed output is shown
    page = (gallery / "dask_cluster" / "index.html").read_text()
    shown = re.sub(r"<[^>]+>", "", page)  # the output is shell-highlighted span by span
    assert "identical to the local run: True" in shown and "SYN00001" in shown
    assert "output_shape" in api and "dicomweb_ref" in api and "map_partitions" in api


@pytest.mark.slow
def test_docs_site_runs_every_example(tmp_path):
    site = _build(tmp_path, ".")
    images = {p.name for p in (site / "generated" / "gallery" / "images").glob("*.png")}
    assert "mkd_glr_study_000_diffx_analysis_001.png" in images
    page = (site / "generated" / "gallery" / "study_001_fusion_survival" / "index.html")
    assert "FusionSurvival intermediate" in page.read_text()
