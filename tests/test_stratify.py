"""RiskGrouper and the studies' statistics against hand-made data, brute force and lifelines."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sksurv.column import encode_categorical
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.util import Surv

from fracsurv.stratify import (
    RiskGrouper,
    agreement,
    bland_altman_figure,
    cox_table,
    decision_table,
    delong_test,
    km_figure,
    logrank_tables,
    maxstat_cutpoint,
    td_auc_table,
)
from fracsurv.survival import DeepSurvRegressor


def test_groups_exact_on_hand_made_data():
    X = pd.DataFrame({"pvf": [0.1, 0.49, 0.5, 0.9, 0.2, 0.3],
                      "gpvf": [0.1, 0.6, 0.0, 0.9, 0.59, 0.61]}, index=list("abcdef"))
    out = RiskGrouper(thresholds=(0.5, 0.6)).fit_transform(X)
    assert out["risk_group"].tolist() == ["LL", "LH", "HIGH", "HIGH", "LL", "LH"]
    assert out["risk_group"].cat.ordered and list(out["risk_group"].cat.categories) == ["LL", "LH", "HIGH"]
    assert out["risk_LH"].tolist() == [0, 1, 0, 0, 0, 1]
    assert out["risk_HIGH"].tolist() == [0, 0, 1, 1, 0, 0]
    assert out["pvf"].equals(X["pvf"])  # columns are added, not replaced
    assert list(RiskGrouper().fit(X).get_feature_names_out()) == ["pvf", "gpvf", "risk_group",
                                                                  "risk_LH", "risk_HIGH"]


def test_bad_scores_name_the_row():
    X = pd.DataFrame({"pvf": [0.1, np.nan], "gpvf": [0.2, 0.3]}, index=["p1", "p2"])
    with pytest.raises(ValueError, match=r"'pvf'.*'p2'"):
        RiskGrouper().fit(X)
    with pytest.raises(ValueError, match="no column 'gpvf'"):
        RiskGrouper().fit(X[["pvf"]].fillna(0.0))


@pytest.fixture(scope="module")
def gbsg():
    X, y = load_gbsg2()
    return encode_categorical(X).astype(float), y


def test_optimal_cutpoint_equals_brute_force(gbsg):
    from lifelines.statistics import logrank_test

    X, y = gbsg
    score = X["pnodes"].to_numpy()
    event, time = y["cens"], y["time"]
    res = maxstat_cutpoint(score, time, event, min_group_fraction=0.1)
    n = len(score)
    best, best_cut = -1, None
    for cut in np.unique(score):
        hi = score >= cut
        if 0.1 * n <= hi.sum() <= 0.9 * n:
            s = logrank_test(time[hi], time[~hi], event[hi], event[~hi]).test_statistic
            if s > best:
                best, best_cut = s, cut
    assert res["cutpoint"] == best_cut
    assert res["statistic"] == pytest.approx(best)
    assert 0 <= res["p_unadjusted"] <= res["p_adjusted"] <= 1


def test_optimal_thresholds_in_grouper(gbsg):
    X, y = gbsg
    frame = pd.DataFrame({"pvf": X["pnodes"] / X["pnodes"].max(), "gpvf": X["tsize"] / X["tsize"].max()})
    g = RiskGrouper(thresholds="optimal").fit(frame, y)
    tb, _ = g.thresholds_
    assert frame["pvf"].min() < tb <= frame["pvf"].max()
    assert set(g.cutpoint_stats_) == {"baseline", "future"}
    groups = g.transform(frame)["risk_group"]
    assert groups.value_counts().min() > 0
    with pytest.raises(ValueError, match="requires y"):
        RiskGrouper(thresholds="optimal").fit(frame)


def test_grouper_in_pipeline_and_gridsearch(gbsg):
    X, y = gbsg
    frame = pd.DataFrame({"pvf": X["pnodes"] / X["pnodes"].max(),
                          "gpvf": X["tsize"] / X["tsize"].max(), "age": X["age"]})

    from sklearn.compose import ColumnTransformer

    pipe = make_pipeline(
        RiskGrouper(thresholds=(0.1, 0.4)),
        ColumnTransformer([("keep", "passthrough", ["age", "risk_LH", "risk_HIGH"])]),
        DeepSurvRegressor(hidden_units=(), optimizer="lbfgs", lr=1.0, max_epochs=3, random_state=0),
    )
    grid = GridSearchCV(pipe, {"riskgrouper__thresholds": [(0.1, 0.4), (0.2, 0.5)]},
                        cv=KFold(2, shuffle=True, random_state=0)).fit(frame, y)
    assert 0.5 < grid.best_score_ < 1
    assert clone(RiskGrouper(thresholds=(0.2, 0.3))).thresholds == (0.2, 0.3)
    out = RiskGrouper().set_output(transform="pandas").fit_transform(frame)
    assert "risk_group" in out.columns


def test_cox_table_matches_lifelines(gbsg):
    from lifelines import CoxPHFitter

    X, y = gbsg
    cov = ["age", "tsize", "pnodes", "horTh=yes"]
    hr, models = cox_table(X, y, cov, multivariable=[cov[:2], cov])
    df = X[cov].assign(T=y["time"], E=y["cens"].astype(int))
    ref = CoxPHFitter().fit(df, "T", "E").summary
    np.testing.assert_allclose(hr["M2"]["HR"].loc[cov], ref["exp(coef)"].loc[cov], rtol=1e-6)
    np.testing.assert_allclose(hr["M2"]["CI low"].loc[cov], ref["exp(coef) lower 95%"].loc[cov], rtol=1e-6)
    uni = CoxPHFitter().fit(df[["tsize", "T", "E"]], "T", "E").summary
    assert hr["univariable"]["HR"]["tsize"] == pytest.approx(uni["exp(coef)"]["tsize"])
    assert models.loc["M2", "LR vs previous"] > 0 and 0 <= models.loc["M2", "p vs previous"] <= 1
    assert 0.5 < models.loc["M2", "C-index"] < 1


def test_km_and_logrank(gbsg):
    X, y = gbsg
    groups = pd.Series(pd.Categorical(np.where(X["pnodes"] > 3, "HIGH", "LL"),
                                      categories=["LL", "HIGH"], ordered=True))
    fig = km_figure(y, groups)
    assert len(fig.axes[0].get_lines()) >= 2
    pw, overall = logrank_tables(y, groups)
    assert overall["p"].iloc[0] < 1e-6 and len(pw) == 1


def test_td_auc_table(gbsg):
    X, y = gbsg
    times = np.percentile(y["time"][y["cens"]], [25, 50, 75])
    t = td_auc_table(y, y, {"pnodes": X["pnodes"].to_numpy(), "noise": np.random.default_rng(0).random(len(X))}, times)
    assert t.loc["pnodes", "mean"] > 0.6 > t.loc["noise", "mean"] - 0.1


def test_delong_against_brute_force_and_bootstrap():
    rng = np.random.default_rng(0)
    n = 300
    label = rng.random(n) < 0.3
    a = label * 1.0 + rng.normal(0, 1, n)
    b = label * 0.5 + rng.normal(0, 1, n) + 0.5 * a
    res = delong_test(label, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(label, a))
    assert res["auc_b"] == pytest.approx(roc_auc_score(label, b))
    diffs = []
    for _ in range(400):
        i = rng.integers(0, n, n)
        if label[i].all() or not label[i].any():
            continue
        diffs.append(roc_auc_score(label[i], a[i]) - roc_auc_score(label[i], b[i]))
    assert res["se"] == pytest.approx(np.std(diffs), rel=0.25)
    same = delong_test(label, a, a)
    assert same["difference"] == 0 and same["p"] == 1.0


def test_agreement_and_bland_altman():
    rng = np.random.default_rng(1)
    a = rng.random(200)
    b = a + rng.normal(0.05, 0.1, 200)
    st = agreement(a, b)
    assert st["r_low"] < st["r"] < st["r_high"]
    assert st["mean_difference"] == pytest.approx(np.mean(a - b))
    assert st["loa_high"] - st["loa_low"] == pytest.approx(2 * 1.96 * st["sd_difference"])
    assert len(bland_altman_figure(a, b).axes) == 2


def test_decision_table_counts():
    y = Surv.from_arrays([True, True, False, False, True, False], [1.0, 2.0, 5.0, 6.0, 8.0, 1.0])
    clin = np.array([25, 10, 30, 5, 10, 50])
    high = np.array([False, True, False, True, False, False])
    t = decision_table(y, 3.0, clin, 20, high)
    first, second = t.iloc[0], t.iloc[1]
    # usable: rows 0-4 (row 5 censored at 1 < 3); cases: rows 0, 1
    assert first["n"] == 5 and first["TP"] == 1 and first["FP"] == 1
    assert second["TP"] == 2 and second["FP"] == 2
    assert second["extra fractures identified"] == 1
    assert second["sensitivity"] == 1.0


def test_real_whas500_cox_hr_ci_match_lifelines():
    from lifelines import CoxPHFitter

    X, y = load_whas500()
    X = encode_categorical(X).astype(float)
    hr, _ = cox_table(X, y, ["age", "bmi"])
    ref = CoxPHFitter().fit(X[["age", "bmi"]].assign(T=y["lenfol"], E=y["fstat"].astype(int)), "T", "E").summary
    np.testing.assert_allclose(hr["M1"]["CI high"].to_numpy(), ref["exp(coef) upper 95%"].to_numpy(), rtol=1e-6)
