"""`fracsurv demo` end to end on a tiny configuration."""

import re

from fracsurv.cli import main


def test_demo_writes_report_with_every_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRACSURV_DATA", str(tmp_path / "data"))
    assert main(["demo", "--out", str(tmp_path), "--tiny", "--n-patients", "200",
                 "--image-shape", "128x64"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "SIMULATED DATA" in html
    for anchor in ("cohort", "models", "td-auc", "km", "hr", "decision", "examples", "gradcam",
                   "futures", "run"):
        assert f'id="{anchor}"' in html
    # every model row has a C-index with a CI, e.g. "0.712 (0.650-0.770)"
    assert len(re.findall(r"0\.\d{3} \(0\.\d{3}-0\.\d{3}\)", html)) >= 2
    assert "Oracle (true log-hazard)" in html
    assert html.count("data:image/png;base64,") >= 6
    assert "Kaplan-Meier by risk group" in html and "Clinical fidelity" in html
    # the learned cropper's detection table and the fusion model are in the report
    assert "VertebraCropper (test split)" in html
    assert "FusionSurvival (13 crops + clinical)" in html
    out = capsys.readouterr().out
    assert "demo finished" in out and "risk groups (test)" in out
    assert "VertebraCropper trained on" in out
    # components that do not exist yet are announced, never faked
    assert "skipped: generated future radiographs" not in out
    # by default the shipped generator and image pVF scorer are used, not trained
    assert "DiffXGenerator: pretrained" in out and "DiffXGenerator trained on" not in out
    assert "fracsurv.pretrained.load(&#x27;diffx&#x27;)" in html or \
        "fracsurv.pretrained.load('diffx')" in html


def test_demo_retrain_trains_the_image_models(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRACSURV_DATA", str(tmp_path / "data"))
    assert main(["demo", "--out", str(tmp_path), "--tiny", "--retrain", "--n-patients", "120",
                 "--image-shape", "64x32"]) == 0
    out = capsys.readouterr().out
    assert "DiffXGenerator trained on" in out and "DiffXGenerator: pretrained" not in out
    assert "trained in the demo" in (tmp_path / "report.html").read_text()
