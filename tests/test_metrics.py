"""Metrics: agreement with scikit-survival/lifelines, invariances, bootstrap intervals, LR tests."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sksurv.column import encode_categorical
from sksurv.datasets import load_gbsg2, load_veterans_lung_cancer, load_whas500
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from fracsurv.metrics import (
    bootstrap_ci,
    concordance_index,
    concordance_index_ci,
    cox_lr_test,
    integrated_brier,
    integrated_brier_ci,
    likelihood_ratio_test,
    mean_auc_ci,
    time_dependent_auc,
    uno_c,
    uno_c_ci,
)

FAST = settings(max_examples=40, deadline=None)


@st.composite
def survival_data(draw, min_n=4, max_n=40):
    """Survival data with tied times and tied risks (risks on a 1/4 grid)."""
    n = draw(st.integers(min_n, max_n))
    time = draw(arrays(np.float64, n, elements=st.integers(1, 12).map(float)))
    event = draw(arrays(np.bool_, n))
    risk = draw(arrays(np.float64, n, elements=st.integers(-40, 40).map(lambda k: k / 4)))
    return Surv.from_arrays(event, time), risk


def _has_comparable_pair(y):
    e, t = y["event"], y["time"]
    return bool(np.any(e[:, None] & (t[:, None] < t[None, :])))


def _brute_force_c(y, risk):
    """Harrell's C by a pair loop, with scikit-survival's rules for tied times."""
    e, t = y["event"], y["time"]
    num = den = 0.0
    for i in range(len(t)):
        if not e[i]:
            continue
        for j in range(len(t)):
            # comparable: j outlived i, or j was censored at i's event time
            if t[j] > t[i] or (t[j] == t[i] and not e[j]):
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return num / den


@FAST
@given(data=survival_data())
def test_c_matches_brute_force_and_lifelines(data):
    from lifelines.utils import concordance_index as lifelines_c

    y, risk = data
    if not _has_comparable_pair(y):
        return
    c = concordance_index(y, risk)
    assert c == pytest.approx(_brute_force_c(y, risk))
    assert c == pytest.approx(lifelines_c(y["time"], -risk, y["event"]))


@FAST
@given(data=survival_data())
def test_c_invariant_to_increasing_transforms_and_row_order(data):
    y, risk = data
    if not _has_comparable_pair(y):
        return
    c = concordance_index(y, risk)
    assert 0.0 <= c <= 1.0
    # risks lie on a 1/4 grid, so these strictly increasing maps keep every tie a
    # tie and every difference far above scikit-survival's tied_tol
    for f in (lambda r: 3 * r + 7, lambda r: np.exp(r / 3), np.arctan, lambda r: r**3):
        assert concordance_index(y, f(risk)) == pytest.approx(c, abs=1e-12)
    perm = np.random.default_rng(len(y)).permutation(len(y))
    assert concordance_index(y[perm], risk[perm]) == pytest.approx(c, abs=1e-12)


@FAST
@given(data=survival_data())
def test_c_of_negated_risk(data):
    """C(-r) = 1 - C(r) exactly, even with tied risks and tied times.

    With scikit-survival's definition every comparable pair is concordant,
    discordant or risk-tied (1/2 each way); negating r swaps the first two and keeps
    the ties, so the two C's sum to 1. Tied event times are simply not comparable.
    """
    y, risk = data
    if not _has_comparable_pair(y):
        return
    assert concordance_index(y, -risk) == pytest.approx(1.0 - concordance_index(y, risk), abs=1e-12)
    distinct = np.random.default_rng(0).permutation(len(y)).astype(float)
    assert concordance_index(y, -distinct) == pytest.approx(1 - concordance_index(y, distinct))


def test_c_boundary_cases():
    y = Surv.from_arrays([True, True, True, False], [1.0, 2.0, 3.0, 4.0])
    assert concordance_index(y, [4, 3, 2, 1]) == 1.0
    assert concordance_index(y, [1, 2, 3, 4]) == 0.0
    assert concordance_index(y, [0, 0, 0, 0]) == 0.5
    with pytest.raises(ValueError, match="3 values but y has 4"):
        concordance_index(y, [1, 2, 3])


@pytest.mark.parametrize("load", [load_gbsg2, load_whas500, load_veterans_lung_cancer])
def test_c_agrees_with_sksurv_and_lifelines_on_real_data(load):
    from lifelines.utils import concordance_index as lifelines_c

    X, y = load()
    X = encode_categorical(X).astype(float)
    risk = CoxPHSurvivalAnalysis().fit(X, y).predict(X)
    ev, t = y.dtype.names
    c = concordance_index(y, risk)
    assert c == concordance_index_censored(y[ev], y[t], risk)[0]
    assert c == pytest.approx(lifelines_c(y[t], -risk, y[ev]), abs=1e-12)
    assert 0.6 < c < 0.85


@pytest.fixture(scope="module")
def gbsg_split():
    X, y = load_gbsg2()
    X = encode_categorical(X).astype(float)
    tr, te = np.arange(450), np.arange(450, len(X))
    model = CoxPHSurvivalAnalysis().fit(X.iloc[tr], y[tr])
    times = np.percentile(y["time"][te][y["cens"][te]], [20, 40, 60])
    return X, y, tr, te, model, times


def test_ipcw_wrappers_equal_sksurv(gbsg_split):
    X, y, tr, te, model, times = gbsg_split
    risk = model.predict(X.iloc[te])
    assert uno_c(y[tr], y[te], risk, tau=times[-1]) == concordance_index_ipcw(
        y[tr], y[te], risk, tau=times[-1])[0]
    auc, mean = time_dependent_auc(y[tr], y[te], risk, times)
    ref_auc, ref_mean = cumulative_dynamic_auc(y[tr], y[te], risk, times)
    np.testing.assert_array_equal(auc, ref_auc)
    assert mean == ref_mean
    surv = np.vstack([fn(times) for fn in model.predict_survival_function(X.iloc[te])])
    assert integrated_brier(y[tr], y[te], surv, times) == integrated_brier_score(
        y[tr], y[te], surv, times)


def test_bootstrap_ci_contains_estimate_and_is_reproducible(gbsg_split):
    X, y, _, te, model, _ = gbsg_split
    risk = model.predict(X.iloc[te])
    a = concordance_index_ci(y[te], risk, n_boot=100, random_state=1)
    b = concordance_index_ci(y[te], risk, n_boot=100, random_state=1)
    c = concordance_index_ci(y[te], risk, n_boot=100, random_state=2)
    assert a == b
    assert a != c
    assert a.estimate == concordance_index(y[te], risk)
    assert a.low < a.estimate < a.high
    assert 0.0 < a.se < 0.1
    narrow = concordance_index_ci(y[te], risk, n_boot=100, random_state=1, alpha=0.5)
    assert a.low < narrow.low < narrow.high < a.high
    noise = concordance_index_ci(y[te], np.random.default_rng(0).normal(size=len(te)),
                                 n_boot=100, random_state=1)
    assert noise.low < 0.5 < noise.high


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), effect=st.floats(0.0, 2.0))
def test_bootstrap_ci_contains_estimate_on_reasonable_data(seed, effect):
    rng = np.random.default_rng(seed)
    n = 80
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-effect * x))
    c = rng.exponential(2.0, n)
    y = Surv.from_arrays(t <= c, np.minimum(t, c) + 1e-3)
    if y["event"].sum() < 10:
        return
    res = concordance_index_ci(y, x, n_boot=50, random_state=seed)
    assert res.low <= res.estimate <= res.high
    assert 0.0 <= res.low <= res.high <= 1.0
    assert res == concordance_index_ci(y, x, n_boot=50, random_state=seed)


def test_ipcw_metric_cis(gbsg_split):
    X, y, tr, te, model, times = gbsg_split
    risk = model.predict(X.iloc[te])
    uno = uno_c_ci(y[tr], y[te], risk, tau=times[-1], n_boot=100, random_state=0)
    auc = mean_auc_ci(y[tr], y[te], risk, times, n_boot=100, random_state=0)
    surv = np.vstack([fn(times) for fn in model.predict_survival_function(X.iloc[te])])
    ibs = integrated_brier_ci(y[tr], y[te], surv, times, n_boot=100, random_state=0)
    for res in (uno, auc):
        assert 0.5 < res.low < res.estimate < res.high < 1.0
    assert 0.0 < ibs.low < ibs.estimate < ibs.high < 0.25
    assert ibs.estimate == integrated_brier_score(y[tr], y[te], surv, times)


def test_bootstrap_arguments_are_checked():
    y = Surv.from_arrays([True, False, True], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(concordance_index, y, np.arange(3.0), alpha=1.5)
    with pytest.raises(ValueError, match="2 rows but y has 3"):
        bootstrap_ci(concordance_index, y, np.arange(2.0))

    def needs_distinct_rows(yy, r):  # undefined on most resamples of 3 rows
        if len(np.unique(yy["time"])) < 3:
            raise ValueError("undefined")
        return 0.5

    with pytest.raises(ValueError, match=r"undefined in \d+ of 20 bootstrap resamples"):
        bootstrap_ci(needs_distinct_rows, y, np.arange(3.0), n_boot=20, random_state=0)


def test_lr_test_matches_lifelines():
    from lifelines import CoxPHFitter

    X, y = load_gbsg2()
    df = encode_categorical(X).astype(float).assign(T=y["time"], E=y["cens"].astype(int))
    full = ["age", "tsize", "pnodes", "progrec"]
    res = cox_lr_test(df, "T", "E", full, ["age"])
    f = CoxPHFitter().fit(df[["T", "E", *full]], "T", "E")
    r = CoxPHFitter().fit(df[["T", "E", "age"]], "T", "E")
    assert res.statistic == pytest.approx(2 * (f.log_likelihood_ - r.log_likelihood_))
    assert res.df == 3
    assert res.p_value < 1e-6
    null = cox_lr_test(df, "T", "E", full)  # against the null model
    assert null.statistic == pytest.approx(f.log_likelihood_ratio_test().test_statistic, rel=1e-9)
    assert null.df == 4
    # LR statistics add up along a chain of nested models
    null_age = cox_lr_test(df, "T", "E", ["age"])
    assert res.statistic == pytest.approx(null.statistic - null_age.statistic, rel=1e-6)


def test_lr_test_arguments():
    res = likelihood_ratio_test(-10.0, -12.0, 3, 1)
    assert res.statistic == pytest.approx(4.0)
    assert res.p_value == pytest.approx(np.exp(-2.0))  # chi2(2) survival function at 4
    with pytest.raises(ValueError, match="more parameters"):
        likelihood_ratio_test(-10.0, -12.0, 1, 1)
    import pandas as pd

    df = pd.DataFrame({"T": [1.0, 2.0], "E": [1, 0], "a": [0.0, 1.0]})
    with pytest.raises(ValueError, match="not in full"):
        cox_lr_test(df, "T", "E", ["a"], ["b"])
    with pytest.raises(ValueError, match=r"no column\(s\) \['b'\]"):
        cox_lr_test(df, "T", "E", ["b"])
