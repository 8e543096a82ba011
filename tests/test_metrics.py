"""Metrics: agreement with scikit-survival/lifelines, invariances, bootstrap intervals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sksurv.column import encode_categorical
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from fracsurv.metrics import (
    concordance_index,
    concordance_index_ci,
    cox_lr_test,
    integrated_brier_ci,
    likelihood_ratio_test,
    mean_auc_ci,
    uno_c_ci,
)


@st.composite
def survival_data(draw, min_n=5, max_n=40):
    n = draw(st.integers(min_n, max_n))
    time = draw(arrays(np.float64, n, elements=st.floats(0.5, 100, allow_nan=False)))
    event = draw(arrays(np.bool_, n))
    event[0] = True
    risk = draw(arrays(np.float64, n, elements=st.floats(-10, 10, allow_nan=False)))
    return Surv.from_arrays(event, time), risk


def _comparable(y):
    e, t = y["event"], y["time"]
    return any(e[i] and t[i] < t[j] for i in range(len(t)) for j in range(len(t)))


@settings(max_examples=60, deadline=None)
@given(data=survival_data())
def test_c_invariant_to_monotone_transform_and_permutation(data):
    y, risk = data
    if not _comparable(y):
        return
    c = concordance_index(y, risk)
    assert 0.0 <= c <= 1.0
    assert concordance_index(y, np.exp(risk / 3.0) * 2 + 1) == pytest.approx(c)
    perm = np.random.default_rng(0).permutation(len(y))
    assert concordance_index(y[perm], risk[perm]) == pytest.approx(c)


@settings(max_examples=60, deadline=None)
@given(data=survival_data())
def test_c_of_negated_risk_is_one_minus_c_without_ties(data):
    y, _ = data
    if not _comparable(y):
        return
    risk = np.random.default_rng(len(y)).permutation(len(y)).astype(float)  # no tied risks
    assert concordance_index(y, -risk) == pytest.approx(1.0 - concordance_index(y, risk))


def test_c_matches_sksurv_on_real_data():
    X, y = load_whas500()
    X = encode_categorical(X).astype(float)
    risk = CoxPHSurvivalAnalysis().fit(X, y).predict(X)
    assert concordance_index(y, risk) == concordance_index_censored(y["fstat"], y["lenfol"], risk)[0]


@pytest.fixture(scope="module")
def gbsg_split():
    X, y = load_gbsg2()
    X = encode_categorical(X).astype(float)
    tr, te = np.arange(450), np.arange(450, len(X))
    model = CoxPHSurvivalAnalysis().fit(X.iloc[tr], y[tr])
    return X, y, tr, te, model


def test_bootstrap_ci_contains_estimate_and_is_reproducible(gbsg_split):
    X, y, _, te, model = gbsg_split
    risk = model.predict(X.iloc[te])
    a = concordance_index_ci(y[te], risk, n_boot=200, random_state=1)
    b = concordance_index_ci(y[te], risk, n_boot=200, random_state=1)
    c = concordance_index_ci(y[te], risk, n_boot=200, random_state=2)
    assert a == b
    assert a != c
    assert a.low < a.estimate < a.high
    assert 0.0 < a.se < 0.1
    # a random risk gives an interval that contains 0.5
    noise = concordance_index_ci(y[te], np.random.default_rng(0).normal(size=len(te)),
                                 n_boot=200, random_state=1)
    assert noise.low < 0.5 < noise.high


def test_ipcw_metric_cis(gbsg_split):
    X, y, tr, te, model = gbsg_split
    risk = model.predict(X.iloc[te])
    times = np.percentile(y["time"][te][y["cens"][te]], [20, 40, 60])
    uno = uno_c_ci(y[tr], y[te], risk, tau=times[-1], n_boot=100, random_state=0)
    auc = mean_auc_ci(y[tr], y[te], risk, times, n_boot=100, random_state=0)
    surv = np.vstack([fn(times) for fn in model.predict_survival_function(X.iloc[te])])
    ibs = integrated_brier_ci(y[tr], y[te], surv, times, n_boot=100, random_state=0)
    for res in (uno, auc):
        assert 0.5 < res.low < res.estimate < res.high < 1.0
    assert 0.0 < ibs.low < ibs.estimate < ibs.high < 0.25


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
    # against the null model: lifelines' own overall LR test
    null = cox_lr_test(df, "T", "E", full, [])
    assert null.statistic == pytest.approx(f.log_likelihood_ratio_test().test_statistic, rel=1e-6)


def test_lr_test_arguments():
    assert likelihood_ratio_test(-10.0, -12.0, 3, 1).statistic == pytest.approx(4.0)
    with pytest.raises(ValueError, match="more parameters"):
        likelihood_ratio_test(-10.0, -12.0, 1, 1)
