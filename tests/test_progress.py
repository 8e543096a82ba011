"""Progress bars (tqdm) on long loops and the library's logging manners (issue 21)."""

import logging
import subprocess
import sys

import numpy as np
import pytest

import fracsurv
from fracsurv._progress import show_progress
from fracsurv.datasets.spine import make_spine_cohort
from fracsurv.metrics import bootstrap_ci, concordance_index
from fracsurv.stratify.cutpoint import maxstat_cutpoint


@pytest.fixture
def fracsurv_logger():
    logger = logging.getLogger("fracsurv")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_library_logger_has_a_null_handler_and_shows_no_bars_by_default(fracsurv_logger,
                                                                         monkeypatch):
    monkeypatch.delenv("FRACSURV_PROGRESS", raising=False)
    # a fresh interpreter: the CLI (run by other tests) replaces the handlers with its own
    code = ("import logging, fracsurv; print(any(isinstance(h, logging.NullHandler) "
            "for h in logging.getLogger('fracsurv').handlers))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
    assert fracsurv.__version__
    fracsurv_logger.setLevel(logging.NOTSET)
    assert not show_progress()
    fracsurv_logger.setLevel(logging.INFO)  # what the CLI does without --quiet
    assert show_progress()
    monkeypatch.setenv("FRACSURV_PROGRESS", "0")
    assert not show_progress()
    fracsurv_logger.setLevel(logging.WARNING)
    monkeypatch.setenv("FRACSURV_PROGRESS", "1")
    assert show_progress()


def _survival(n=120, seed=0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk))
    event = rng.random(n) < 0.7
    y = np.array(list(zip(event, time, strict=True)), dtype=[("event", bool), ("time", float)])
    return y, risk, time, event


def test_bootstrap_and_permutation_show_a_bar_and_give_the_same_numbers(monkeypatch, capfd):
    y, risk, time, event = _survival()
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("FRACSURV_PROGRESS", flag)
        ci = bootstrap_ci(concordance_index, y, risk, n_boot=50, random_state=3)
        cut = maxstat_cutpoint(risk, time, event, p_value="permutation", n_permutations=30,
                               random_state=3)
        err = capfd.readouterr().err
        assert ("bootstrap" in err and "permutation test" in err) == (flag == "1"), err
        results[flag] = (ci.low, ci.high, cut["p_adjusted"])
    assert results["0"] == results["1"]


def test_cohort_simulation_bar_keeps_patients_in_order(monkeypatch, capfd):
    monkeypatch.setenv("FRACSURV_PROGRESS", "1")
    monkeypatch.setenv("FRACSURV_MIN_PARALLEL_S", "0")
    a = make_spine_cohort(12, image_shape=(32, 16), random_state=5, n_jobs=2)
    assert "simulate cohort" in capfd.readouterr().err
    monkeypatch.setenv("FRACSURV_PROGRESS", "0")
    b = make_spine_cohort(12, image_shape=(32, 16), random_state=5, n_jobs=1)
    assert capfd.readouterr().err == ""
    for ia, ib in zip(a.frame["image"], b.frame["image"], strict=True):
        np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(a.frame["age"], b.frame["age"])
