"""RiskGrouper and cut-point selection: hand-made data, brute force with lifelines, sklearn API."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from sksurv.column import encode_categorical
from sksurv.datasets import load_gbsg2
from sksurv.linear_model import CoxPHSurvivalAnalysis

from fracsurv.stratify import RiskGrouper, lausen_schumacher_p, logrank_scan, maxstat_cutpoint


# -- fixed thresholds ----------------------------------------------------------------------
def test_groups_exact_on_hand_made_data_with_boundaries():
    # boundaries: baseline == t_b is HIGH; future == t_f is LH
    X = pd.DataFrame({"pvf": [0.1, 0.49, 0.5, 0.9, 0.2, 0.3, 0.5, 0.4999],
                      "gpvf": [0.1, 0.6, 0.0, 0.9, 0.59, 0.61, 0.7, 0.5999],
                      "age": [70, 71, 72, 73, 74, 75, 76, 77]}, index=list("abcdefgh"))
    out = RiskGrouper(thresholds=(0.5, 0.6)).fit_transform(X)
    assert out["risk_group"].tolist() == ["LL", "LH", "HIGH", "HIGH", "LL", "LH", "HIGH", "LL"]
    assert out["risk_group"].cat.ordered
    assert list(out["risk_group"].cat.categories) == ["LL", "LH", "HIGH"]
    assert (out["risk_group"] > "LL").tolist() == [False, True, True, True, False, True, True, False]
    assert out["risk_LH"].tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
    assert out["risk_HIGH"].tolist() == [0, 0, 1, 1, 0, 0, 1, 0]
    pd.testing.assert_frame_equal(out[X.columns], X)  # columns are added, none replaced
    assert list(out.index) == list(X.index)
    names = RiskGrouper().fit(X).get_feature_names_out()
    assert list(names) == ["pvf", "gpvf", "age", "risk_group", "risk_LH", "risk_HIGH"]
    assert list(out.columns) == list(names)


def test_transform_twice_replaces_old_groups():
    X = pd.DataFrame({"pvf": [0.1, 0.9], "gpvf": [0.7, 0.1]})
    once = RiskGrouper().fit_transform(X)
    twice = RiskGrouper(thresholds=(0.95, 0.95)).fit_transform(once)
    assert twice["risk_group"].tolist() == ["LL", "LL"]
    assert list(twice.columns) == list(once.columns)


def test_set_output_pandas_and_numpy_input():
    X = pd.DataFrame({"pvf": [0.1, 0.55, 0.3], "gpvf": [0.2, 0.1, 0.8], "id": ["a", "b", "c"]})
    out = RiskGrouper().set_output(transform="pandas").fit_transform(X)
    assert isinstance(out["risk_group"].dtype, pd.CategoricalDtype)
    assert out["risk_group"].tolist() == ["LL", "HIGH", "LH"]
    arr = RiskGrouper(baseline_column=0, future_column=1).fit_transform(X[["pvf", "gpvf"]].to_numpy())
    np.testing.assert_array_equal(arr[:, 2:], [[0, 0, 0], [2, 0, 1], [1, 1, 0]])
    # default (named) columns need a DataFrame
    with pytest.raises(TypeError, match="DataFrame with columns 'pvf' and 'gpvf'"):
        RiskGrouper().fit(X[["pvf", "gpvf"]].to_numpy())


def test_bad_inputs_name_the_problem():
    X = pd.DataFrame({"pvf": [0.1, np.nan], "gpvf": [0.2, 0.3]}, index=["p1", "p2"])
    with pytest.raises(ValueError, match=r"'pvf'.*'p2'"):
        RiskGrouper().fit(X)
    with pytest.raises(ValueError, match="no column 'gpvf'"):
        RiskGrouper().fit(X[["pvf"]].fillna(0.0))
    ok = X.fillna(0.0)
    with pytest.raises(ValueError, match="two finite numbers"):
        RiskGrouper(thresholds=(0.5,)).fit(ok)
    with pytest.raises(ValueError, match="'thresholds' parameter of RiskGrouper must be"):
        RiskGrouper(thresholds="best").fit(ok)
    with pytest.raises(ValueError, match="requires y"):
        RiskGrouper(thresholds="optimal").fit(ok)


# -- the scikit-learn check suite --------------------------------------------------------------
# The default configuration reads named DataFrame columns, which the suite's NumPy
# inputs do not have; the positional configuration shares every other line of code,
# so the suite runs on it -- with no expected failures.
@parametrize_with_checks([RiskGrouper(baseline_column=0, future_column=1, thresholds=(0.0, 0.5))])
def test_sklearn_compatible(estimator, check):
    check(estimator)


# -- cut-points ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gbsg():
    X, y = load_gbsg2()
    return encode_categorical(X).astype(float), y


def _brute_force(score, time, event, frac):
    """Best cut by one lifelines log-rank test per candidate (highest cut wins ties)."""
    from lifelines.statistics import logrank_test

    n = len(score)
    k = max(1, int(np.ceil(frac * n)))
    best, best_cut = -1.0, None
    for cut in np.unique(score)[::-1]:
        hi = score >= cut
        if k <= hi.sum() <= n - k:
            s = logrank_test(time[hi], time[~hi], event[hi], event[~hi]).test_statistic
            if s > best + 1e-9:
                best, best_cut = s, cut
    return best_cut, best


@pytest.mark.parametrize("column", ["pnodes", "tsize", "age"])
def test_optimal_cutpoint_equals_lifelines_brute_force(gbsg, column):
    X, y = gbsg
    score, event, time = X[column].to_numpy(), y["cens"], y["time"]
    res = maxstat_cutpoint(score, time, event, min_group_fraction=0.1)
    cut, stat = _brute_force(score, time, event, 0.1)
    assert res["cutpoint"] == cut
    assert res["statistic"] == pytest.approx(stat, rel=1e-9)
    assert res["n_high"] == (score >= cut).sum()
    assert 0 <= res["p_unadjusted"] <= res["p_adjusted"] <= 1


def test_logrank_scan_equals_lifelines_for_every_cut():
    from lifelines.statistics import logrank_test

    rng = np.random.default_rng(3)
    n = 120
    score = np.round(rng.random(n), 1)  # many tied scores
    time = rng.integers(1, 15, n).astype(float)  # many tied times
    event = rng.random(n) < 0.6
    cuts, n_high, chi2 = logrank_scan(score, time, event)
    assert np.all(np.diff(cuts) < 0)
    for c, nh, s in zip(cuts, n_high, chi2):
        hi = score >= c
        assert nh == hi.sum()
        if hi.all():
            continue
        assert s == pytest.approx(logrank_test(time[hi], time[~hi], event[hi], event[~hi]).test_statistic)


def test_adjusted_p_values():
    rng = np.random.default_rng(0)
    n = 150
    score = rng.random(n)
    time = rng.exponential(np.exp(-1.5 * (score > 0.6)))
    event = rng.random(n) < 0.8
    ls = maxstat_cutpoint(score, time, event)
    perm = maxstat_cutpoint(score, time, event, p_value="permutation", n_permutations=99,
                            random_state=0)
    assert perm == maxstat_cutpoint(score, time, event, p_value="permutation",
                                    n_permutations=99, random_state=0)
    for r in (ls, perm):
        assert 0 <= r["p_unadjusted"] <= r["p_adjusted"] <= 1
    assert perm["p_adjusted"] >= 1 / 100
    assert 0.5 < ls["cutpoint"] < 0.7 and ls["p_adjusted"] < 0.01
    # no signal: the adjusted p-values are far from significant more often than not,
    # and the Lausen-Schumacher value is larger than the naive one
    null = maxstat_cutpoint(score, rng.permutation(time), event, p_value="permutation",
                            n_permutations=99, random_state=1)
    assert null["p_adjusted"] > null["p_unadjusted"]
    assert null["p_adjusted"] > 0.05
    # the approximation decreases with the statistic and grows with the searched range
    assert lausen_schumacher_p(16, 0.1, 0.9) < lausen_schumacher_p(9, 0.1, 0.9)
    assert lausen_schumacher_p(9, 0.2, 0.8) < lausen_schumacher_p(9, 0.05, 0.95)


def test_cutpoint_errors():
    with pytest.raises(ValueError, match="leaves 5 of the 10 rows"):
        maxstat_cutpoint(np.r_[np.zeros(9), 1.0], np.arange(1.0, 11), np.ones(10, bool),
                         min_group_fraction=0.49)
    with pytest.raises(ValueError, match="no events"):
        maxstat_cutpoint(np.arange(10.0), np.arange(1.0, 11), np.zeros(10, bool))


def test_optimal_thresholds_in_grouper(gbsg):
    X, y = gbsg
    frame = pd.DataFrame({"pvf": X["pnodes"] / X["pnodes"].max(),
                          "gpvf": X["tsize"] / X["tsize"].max()})
    g = RiskGrouper(thresholds="optimal").fit(frame, y)
    tb, tf = g.thresholds_
    # baseline cut on all rows, future cut among the rows below it
    assert tb == maxstat_cutpoint(frame["pvf"], y["time"], y["cens"])["cutpoint"]
    low = (frame["pvf"] < tb).to_numpy()
    assert tf == maxstat_cutpoint(frame["gpvf"][low], y["time"][low], y["cens"][low])["cutpoint"]
    assert set(g.cutpoint_stats_) == {"baseline", "future"}
    counts = g.transform(frame)["risk_group"].value_counts()
    assert counts.min() >= 0.1 * low.sum()
    # the groups are ordered by risk on this data: LL < LH < HIGH hazard
    from lifelines import CoxPHFitter

    out = g.transform(frame)[["risk_LH", "risk_HIGH"]].assign(T=y["time"], E=y["cens"].astype(int))
    hr = CoxPHFitter().fit(out, "T", "E").hazard_ratios_
    assert 1 < hr["risk_LH"] < hr["risk_HIGH"]


def test_grouper_in_pipeline_gridsearch_and_clone(gbsg):
    X, y = gbsg
    frame = pd.DataFrame({"pvf": X["pnodes"] / X["pnodes"].max(),
                          "gpvf": X["tsize"] / X["tsize"].max(), "age": X["age"]})
    pipe = make_pipeline(
        RiskGrouper(thresholds=(0.1, 0.4)),
        ColumnTransformer([("keep", "passthrough", ["age", "risk_LH", "risk_HIGH"])]),
        CoxPHSurvivalAnalysis(),
    )
    grid = GridSearchCV(pipe, {"riskgrouper__thresholds": [(0.1, 0.4), "optimal"]},
                        cv=KFold(2, shuffle=True, random_state=0)).fit(frame, y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert 0.55 < grid.best_score_ < 0.7
    fitted = grid.best_estimator_.named_steps["riskgrouper"]
    if grid.best_params_["riskgrouper__thresholds"] == "optimal":  # refit on all rows
        assert fitted.thresholds_ == RiskGrouper(thresholds="optimal").fit(frame, y).thresholds_
    else:
        assert fitted.thresholds_ == (0.1, 0.4)
    c = clone(RiskGrouper(thresholds=(0.2, 0.3), random_state=4))
    assert c.get_params()["thresholds"] == (0.2, 0.3) and not hasattr(c, "thresholds_")
