"""``fracsurv train``: dependency order, cards, per-epoch checkpoints and resuming."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fracsurv import pretrained
from fracsurv.datasets import make_spine_cohort
from fracsurv.nn import resume
from fracsurv.nn.resume import resumable
from fracsurv.pretrained.train import MODEL_NAMES
from fracsurv.scoring import PVFScorer


@pytest.fixture(scope="module")
def rows():
    return make_spine_cohort(16, image_shape=(64, 32), random_state=1, dicom=False,
                             n_followups=0).frame


def _scorer(epochs=3):
    return PVFScorer(backbone="resnet10-tiny", input_shape=(64, 32), max_epochs=epochs,
                     batch_size=8, validation_fraction=0.0, random_state=0, verbose=0)


def _fail_at(monkeypatch, epoch, exc):
    """Make the checkpoint callback stop training right after it saved ``epoch``."""
    save = resume._HistoryCheckpoint.on_epoch_end

    def on_epoch_end(self, net, **kwargs):
        save(self, net, **kwargs)
        if len(net.history) == epoch:
            exc()

    monkeypatch.setattr(resume._HistoryCheckpoint, "on_epoch_end", on_epoch_end)


def test_a_finished_network_is_read_back_not_trained_again(rows, tmp_path):
    with resumable(tmp_path) as log:
        first = _scorer().fit(rows)
    with resumable(tmp_path) as log2:
        again = _scorer().fit(rows)
    assert log == ["PVFScorer net 0: trained"]
    assert log2 == ["PVFScorer net 0: finished earlier"]
    np.testing.assert_array_equal(first.predict_proba(rows), again.predict_proba(rows))
    assert len(again.net_.history) == 3
    # other parameters -> another key: the checkpoint is not applied to a different model
    with resumable(tmp_path) as log3:
        _scorer(epochs=2).fit(rows)
    assert log3 == ["PVFScorer net 0: trained"]


def test_an_interrupted_fit_continues_from_its_last_epoch(rows, tmp_path, monkeypatch):
    def crash():
        raise RuntimeError("machine handed back")

    _fail_at(monkeypatch, 2, crash)
    with pytest.raises(RuntimeError, match="handed back"), resumable(tmp_path):
        _scorer().fit(rows)
    assert [p.name.endswith(".epoch.pt") for p in tmp_path.iterdir()] == [True]
    monkeypatch.undo()
    with resumable(tmp_path) as log:
        est = _scorer().fit(rows)
    assert log == ["PVFScorer net 0: resumed at epoch 3 of 3"]
    assert len(est.net_.history) == 3  # two restored epochs + the one trained now
    assert [p.name.endswith(".done.pt") for p in tmp_path.iterdir()] == [True]


def test_ctrl_c_is_not_taken_for_a_finished_fit(rows, tmp_path, monkeypatch):
    # skorch ends fit() quietly on KeyboardInterrupt (its early-stopping signal)
    _fail_at(monkeypatch, 1, lambda: signal.raise_signal(signal.SIGINT))
    with pytest.raises(KeyboardInterrupt), resumable(tmp_path):
        _scorer().fit(rows)
    assert not list(tmp_path.glob("*.done.pt")) and list(tmp_path.glob("*.epoch.pt"))


def _train(out, *args):
    return subprocess.Popen([sys.executable, "-m", "fracsurv", "train", "--preset", "tiny",
                             "--out", str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_train_killed_mid_way_resumes_and_writes_every_model_with_a_card(tmp_path):
    out = tmp_path / "models"
    proc = _train(out)
    ckpt = out / ".checkpoints" / "diffx"
    deadline = time.monotonic() + 300
    while not list(ckpt.rglob("*.epoch.pt")) and not list(ckpt.rglob("*.done.pt")):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no clean-up of any kind
    proc.wait()
    assert (out / "pvf-scorer" / "card.json").is_file()
    assert not (out / "diffx" / "card.json").is_file()

    refused = _train(out)
    assert refused.wait() == 2 and "--resume" in refused.communicate()[0]

    again = _train(out, "--resume")
    text = again.communicate(timeout=600)[0]
    assert again.returncode == 0, text
    assert "vertebra-cropper: finished in an earlier run, kept" in text
    assert "pvf-scorer: finished in an earlier run, kept" in text
    assert "DiffXGenerator autoencoder: resumed at epoch" in text or \
        "DiffXGenerator autoencoder: finished earlier" in text
    table = pretrained.available(out)
    assert list(table["name"]) == sorted(MODEL_NAMES)
    for name in MODEL_NAMES:
        card = json.loads((out / name / "card.json").read_text())
        assert card["training"]["command"] == f"fracsurv train --preset tiny --models {name}"
        assert card["heldout"]["metrics"] and card["training"]["wall_s"] > 0
        assert (out / name / "card.md").read_text().startswith("# Model card")
    assert not (out / ".checkpoints" / "diffx").exists()  # removed once the model is written
    est = pretrained.load("pvf-scorer", models_dir=out)
    crops = pretrained.load("vertebra-cropper", models_dir=out).transform(
        make_spine_cohort(3, image_shape=(128, 64), random_state=5, dicom=False,
                          n_followups=0).frame)
    assert est.predict_proba(crops).shape == (3, 2)


def test_train_refuses_what_it_cannot_do(tmp_path, capsys):
    from fracsurv.cli import main

    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "a"),
                 "--models", "pvf-scorer", "--upstream", str(tmp_path)]) == 2
    assert "needs a trained vertebra-cropper" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--models", "no-such-model"])
