"""The studies' statistics: Cox tables vs lifelines, KM/log-rank, td-AUC, DeLong, agreement, decision table."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from sksurv.column import encode_categorical
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.util import Surv

from fracsurv.metrics import cox_lr_test
from fracsurv.stratify import (
    agreement,
    agreement_table,
    bland_altman_figure,
    cox_table,
    decision_table,
    delong_table,
    delong_test,
    format_cox_table,
    horizon_labels,
    km_figure,
    logrank_tables,
    td_auc_figure,
    td_auc_table,
)


@pytest.fixture(scope="module")
def whas():
    X, y = load_whas500()
    X = encode_categorical(X).astype(float)
    X["bmi_mid"] = ((X["bmi"] >= 22) & (X["bmi"] < 30)).astype(int)
    X["bmi_high"] = (X["bmi"] >= 30).astype(int)
    return X, y


@pytest.fixture(scope="module")
def whas_tables(whas):
    X, y = whas
    terms = {"BMI group": {"bmi_mid": "22-30", "bmi_high": ">=30"}, "Age": ["age"],
             "Sex": {"gender=1": "female"}}
    models = {"Model 1": ["BMI group", "Age"], "Model 2": ["BMI group", "Age", "Sex"]}
    return cox_table(X, y, terms, models=models, references={"BMI group": "<22"})


def test_cox_hr_and_ci_equal_lifelines_on_whas500(whas, whas_tables):
    from lifelines import CoxPHFitter

    X, y = whas
    hr = whas_tables.hr
    df = X.assign(T=y["lenfol"], E=y["fstat"].astype(int))
    cols = ["bmi_mid", "bmi_high", "age", "gender=1"]
    ref = CoxPHFitter().fit(df[[*cols, "T", "E"]], "T", "E")
    got = hr[(hr["model"] == "Model 2") & ~hr["reference"]].set_index("covariate").loc[cols]
    np.testing.assert_allclose(got["HR"], ref.summary["exp(coef)"].loc[cols], rtol=1e-9)
    np.testing.assert_allclose(got["CI low"], ref.summary["exp(coef) lower 95%"].loc[cols], rtol=1e-9)
    np.testing.assert_allclose(got["CI high"], ref.summary["exp(coef) upper 95%"].loc[cols], rtol=1e-9)
    np.testing.assert_allclose(got["p"], ref.summary["p"].loc[cols], rtol=1e-9)
    # a categorical term's univariable model holds all its levels
    uni = CoxPHFitter().fit(df[["bmi_mid", "bmi_high", "T", "E"]], "T", "E").summary
    got_uni = hr[(hr["model"] == "BMI group (univariable)") & ~hr["reference"]]
    np.testing.assert_allclose(got_uni["HR"], uni["exp(coef)"], rtol=1e-9)
    ref_row = hr[(hr["model"] == "Model 1") & hr["reference"]]
    assert ref_row["level"].tolist() == ["<22"] and ref_row["HR"].tolist() == [1.0]
    m = whas_tables.models.loc["Model 2"]
    assert m["C-index"] == pytest.approx(ref.concordance_index_)
    assert m["LR chi2"] == pytest.approx(ref.log_likelihood_ratio_test().test_statistic)
    assert m["df"] == 4 and m["n"] == 500 and m["events"] == y["fstat"].sum()


def test_cox_nested_comparisons_equal_lr_test(whas, whas_tables):
    X, y = whas
    comp = whas_tables.comparisons.set_index(["reduced", "full"])
    df = X.assign(T=y["lenfol"], E=y["fstat"].astype(int))
    ref = cox_lr_test(df, "T", "E", ["bmi_mid", "bmi_high", "age", "gender=1"],
                      ["bmi_mid", "bmi_high", "age"])
    row = comp.loc[("Model 1", "Model 2")]
    assert row["LR chi2"] == pytest.approx(ref.statistic) and row["df"] == 1
    assert row["p"] == pytest.approx(ref.p_value)
    assert ("Age (univariable)", "Model 1") in comp.index
    assert ("Sex (univariable)", "Model 1") not in comp.index  # not nested


def test_format_cox_table_layout(whas_tables):
    t = format_cox_table(whas_tables)
    assert list(t.columns.get_level_values(0).unique()) == ["Univariable", "Model 1", "Model 2"]
    assert t.loc[("BMI group", "<22"), ("Model 1", "HR (95% CI)")] == "1.000 (Ref)"
    hr = whas_tables.hr
    row = hr[(hr["model"] == "Model 2") & (hr["covariate"] == "age")].iloc[0]
    assert t.loc[("Age", "age"), ("Model 2", "HR (95% CI)")] == (
        f"{row['HR']:.3f} ({row['CI low']:.3f}, {row['CI high']:.3f})")
    assert t.loc[("Age", "age"), ("Model 2", "P value")] == "<0.001"
    assert t.loc[("Sex", "female"), ("Model 1", "HR (95% CI)")] == ""  # not in Model 1
    assert t.loc[("C-index", ""), ("Model 2", "HR (95% CI)")] == (
        f"{whas_tables.models.loc['Model 2', 'C-index']:.3f}")
    assert t.index[-1] == ("LR chi-square", "")


def test_cox_table_on_gbsg2_and_bad_input():
    from lifelines import CoxPHFitter

    X, y = load_gbsg2()
    X = encode_categorical(X).astype(float)
    t = cox_table(X, y, ["age", "tsize", "pnodes"])
    ref = CoxPHFitter().fit(X[["age", "tsize", "pnodes"]].assign(T=y["time"], E=y["cens"].astype(int)),
                            "T", "E").summary
    got = t.hr[t.hr["model"] == "Multivariable"].set_index("covariate")
    np.testing.assert_allclose(got["CI high"], ref["exp(coef) upper 95%"], rtol=1e-9)
    # older spelling: a list of nested models
    t2 = cox_table(X, y, ["age", "tsize"], multivariable=[["age"], ["age", "tsize"]])
    display, models = format_cox_table(t2), t2.models
    assert list(models.index[-2:]) == ["Model 1", "Model 2"]
    assert display.loc[("tsize", "tsize"), ("Model 1", "HR (95% CI)")] == ""
    X.iloc[7, X.columns.get_loc("tsize")] = np.nan
    with pytest.raises(ValueError, match=r"'tsize' is missing .* row 7"):
        cox_table(X, y, ["tsize"])
    with pytest.raises(ValueError, match="not in terms"):
        cox_table(X, y, ["age"], models={"M": ["age", "sex"]})


def test_cox_table_confidence_and_the_deprecated_alpha():
    from lifelines import CoxPHFitter

    X, y = load_gbsg2()
    X = encode_categorical(X).astype(float)
    cols = ["age", "tsize"]
    t = cox_table(X, y, cols, confidence=0.9)
    ref = CoxPHFitter(alpha=0.1).fit(X[cols].assign(T=y["time"], E=y["cens"].astype(int)),
                                     "T", "E").summary
    got = t.hr[t.hr["model"] == "Multivariable"].set_index("covariate")
    np.testing.assert_allclose(got["CI low"], ref["exp(coef) lower 90%"], rtol=1e-9)
    np.testing.assert_allclose(got["CI high"], ref["exp(coef) upper 90%"], rtol=1e-9)
    with pytest.warns(FutureWarning, match="'alpha' is deprecated.*'confidence'"):
        old = cox_table(X, y, cols, alpha=0.1)
    pd.testing.assert_frame_equal(old.hr, t.hr)
    pd.testing.assert_frame_equal(old.models, t.models)
    with pytest.raises(ValueError, match="confidence"):
        cox_table(X, y, cols, confidence=95)


def _groups(X):
    return pd.Series(pd.Categorical(np.where(X["age"] >= 80, "HIGH",
                                             np.where(X["age"] >= 65, "LH", "LL")),
                                    categories=["LL", "LH", "HIGH"], ordered=True))


def test_logrank_tables_equal_lifelines(whas):
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    X, y = whas
    g = _groups(X)
    pw, overall = logrank_tables(y, g)
    assert list(zip(pw["group A"], pw["group B"])) == [("LL", "LH"), ("LL", "HIGH"), ("LH", "HIGH")]
    t, e = y["lenfol"], y["fstat"]
    a, b = (g == "LL").to_numpy(), (g == "HIGH").to_numpy()
    ref = logrank_test(t[a], t[b], e[a], e[b])
    assert pw.loc[1, "test statistic"] == pytest.approx(ref.test_statistic)
    assert pw.loc[1, "p"] == pytest.approx(ref.p_value)
    mv = multivariate_logrank_test(t, g.astype(str), e)
    assert overall.loc["all groups", "test statistic"] == pytest.approx(mv.test_statistic)
    assert overall.loc["all groups", "df"] == 2


def test_km_figure(whas):
    X, y = whas
    fig = km_figure(y, _groups(X), title="WHAS500")
    ax = fig.axes[0]
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    g = _groups(X)
    n = g.value_counts()
    assert [lab.split(" (")[0] for lab in labels] == ["LL", "LH", "HIGH"]  # category order
    for lab, level in zip(labels, ["LL", "LH", "HIGH"], strict=True):
        m = (g == level).to_numpy()
        med = KaplanMeierFitter().fit(y["lenfol"][m], y["fstat"][m]).median_survival_time_
        want = f"median {med:.1f}" if np.isfinite(med) else "median not reached"
        assert lab == f"{level} (n={n[level]}, {want})"
    p = multivariate_logrank_test(y["lenfol"], g.astype(str), y["fstat"]).p_value
    assert legend.get_title().get_text() == (f"log-rank p = {p:.3f}" if p >= 0.001 else
                                             "log-rank p <0.001")
    assert len(fig.axes) >= 2  # the risk table is a second axis
    # the risk table shows at risk, censored and events for every group
    table_text = " ".join(t.get_text() for a in fig.axes[1:] for t in a.get_xticklabels())
    assert all(w in table_text for w in ("At risk", "Censored", "Events", "LL", "HIGH"))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_td_auc_table_equals_sksurv(whas):
    X, y = whas
    times = np.percentile(y["lenfol"][y["fstat"]], [25, 50, 75])
    scores = {"age": X["age"].to_numpy(), "noise": np.random.default_rng(0).random(len(X))}
    t = td_auc_table(y, y, scores, times)
    auc, mean = cumulative_dynamic_auc(y, y, scores["age"], times)
    np.testing.assert_allclose(t.loc["age"].iloc[:3].to_numpy(float), auc)
    assert t.loc["age", "mean"] == pytest.approx(mean)
    assert t.loc["age", "mean"] > 0.65 and abs(t.loc["noise", "mean"] - 0.5) < 0.1
    fig = td_auc_figure(t)
    assert len(fig.axes[0].get_lines()) == 3  # two scores + the 0.5 line


def test_td_auc_with_times_that_print_alike(whas):
    # a tiny demo cohort's quantile times can coincide to 2 decimals: one column each,
    # and the figure draws (it raised "x and y must have the same first dimension")
    X, y = whas
    t0 = float(np.median(y["lenfol"][y["fstat"]]))
    t = td_auc_table(y, y, {"age": X["age"].to_numpy()}, [t0, t0 + 1e-4, t0 + 100])
    assert [c for c in t.columns if c.startswith("t=")] == [f"t={t0:.2f}", f"t={t0 + 100:.2f}"]
    line = td_auc_figure(t).axes[0].get_lines()[0]
    assert len(line.get_xdata()) == 2


def _mann_whitney_auc(label, s):
    pos, neg = s[label], s[~label]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean()


def _delong_brute_force(label, a, b):
    """DeLong et al. (1988) by explicit pair loops (O(m n)), for the test."""
    out = []
    for s in (a, b):
        pos, neg = s[label], s[~label]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        out.append((psi.mean(axis=1), psi.mean(axis=0)))
    v10 = np.vstack([o[0] for o in out])
    v01 = np.vstack([o[1] for o in out])
    s = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    return s[0, 0] + s[1, 1] - 2 * s[0, 1]


def test_delong_against_brute_force_and_bootstrap():
    rng = np.random.default_rng(0)
    n = 300
    label = rng.random(n) < 0.3
    a = np.round(label * 1.0 + rng.normal(0, 1, n), 1)  # rounding creates ties
    b = np.round(label * 0.5 + rng.normal(0, 1, n) + 0.5 * a, 1)
    res = delong_test(label, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(label, a))
    assert res["auc_b"] == pytest.approx(_mann_whitney_auc(label, b))
    assert res["se"] ** 2 == pytest.approx(_delong_brute_force(label, a, b), rel=1e-10)
    diffs = []
    for _ in range(300):
        i = rng.integers(0, n, n)
        diffs.append(roc_auc_score(label[i], a[i]) - roc_auc_score(label[i], b[i]))
    assert res["se"] == pytest.approx(np.std(diffs), rel=0.2)
    assert res["p"] == pytest.approx(2 * stats.norm.sf(abs(res["difference"] / res["se"])))
    same = delong_test(label, a, a)
    assert same["difference"] == 0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="positive and negative"):
        delong_test(np.ones(5, bool), a[:5], b[:5])


def test_delong_table_at_horizons():
    rng = np.random.default_rng(1)
    n = 400
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-x))
    c = rng.exponential(2.0, n)
    y = Surv.from_arrays(t <= c, np.minimum(t, c))
    scores = {"truth": x, "noisy": x + rng.normal(0, 2, n)}
    tab = delong_table(y, [0.5, 1.0], scores, reference="noisy")
    assert tab["score"].tolist() == ["truth", "truth"]
    label, usable = horizon_labels(y, 0.5)
    assert tab.loc[0, "cases"] == label.sum() and tab.loc[0, "controls"] == (usable & ~label).sum()
    assert tab.loc[0, "AUC"] == pytest.approx(roc_auc_score(label[usable], x[usable]))
    assert (tab["difference"] > 0).all() and (tab["p"] < 0.05).all()
    # censored before the horizon: excluded; event after it: a control
    yy = Surv.from_arrays([True, False, True, False], [1.0, 1.0, 3.0, 3.0])
    lab, use = horizon_labels(yy, 2.0)
    assert lab.tolist() == [True, False, False, False] and use.tolist() == [True, False, True, True]


def test_agreement_matches_scipy_and_fisher_z():
    rng = np.random.default_rng(1)
    a = rng.random(200)
    b = a + rng.normal(0.05, 0.1, 200)
    st = agreement(a, b)
    r = np.corrcoef(a, b)[0, 1]
    z, se = np.arctanh(r), 1 / np.sqrt(len(a) - 3)
    assert st["r"] == pytest.approx(r)
    assert st["r_low"] == pytest.approx(np.tanh(z - 1.959964 * se), abs=1e-6)
    assert st["r_high"] == pytest.approx(np.tanh(z + 1.959964 * se), abs=1e-6)
    assert st["mean_difference"] == pytest.approx(np.mean(a - b))
    assert st["sd_difference"] == pytest.approx(np.std(a - b, ddof=1))
    assert st["loa_high"] - st["loa_low"] == pytest.approx(2 * 1.959964 * st["sd_difference"])
    st90 = agreement(a, b, confidence=0.90)  # the limits follow the confidence level
    assert st90["loa_high"] - st90["loa_low"] == pytest.approx(2 * 1.644854 * st["sd_difference"])
    tab = agreement_table({"generated vs real": (a, b)})
    assert tab.loc["generated vs real", "n"] == 200
    fig = bland_altman_figure(a, b, labels=("GpVF", "pVF"))
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "GpVF - pVF"
    with pytest.raises(ValueError, match="row 3 has a missing score"):
        agreement(np.r_[a[:3], np.nan], b[:4])
    assert st["note"] == ""


def test_agreement_with_a_constant_score_says_why_r_is_missing():
    a, b = np.full(10, 0.97), np.linspace(0.1, 0.9, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning from scipy
        st = agreement(a, b)
    assert np.isnan(st["r"]) and np.isnan(st["r_low"]) and np.isnan(st["p"])
    assert st["note"] == "r undefined: the first score is constant (0.97)"
    assert st["mean_difference"] == pytest.approx(np.mean(a - b))
    assert "constant" in agreement_table({"x": (a, b)}).loc["x", "note"]


def test_decision_table_counts():
    y = Surv.from_arrays([True, True, False, False, True, False, True],
                         [1.0, 2.0, 5.0, 6.0, 8.0, 1.0, 9.0])
    clin = np.array([25, 10, 30, 5, 10, 50, 3])
    groups = pd.Series(["LL", "LH", "LL", "HIGH", "LL", "LL", "HIGH"])
    t = decision_table(y, 3.0, clin, 20, groups)
    first, second = t.iloc[0], t.iloc[1]
    # usable at 3 years: rows 0-4 and 6 (row 5 censored at 1); cases: rows 0, 1
    assert first["n"] == 6 and (first["TP"], first["FP"], first["FN"], first["TN"]) == (1, 1, 1, 3)
    assert (second["TP"], second["FP"], second["FN"], second["TN"]) == (2, 3, 0, 1)
    assert second["sensitivity"] == 1.0 and second["specificity"] == pytest.approx(1 / 4)
    assert second["precision"] == pytest.approx(2 / 5)
    assert second["F1"] == pytest.approx(2 * 0.4 * 1.0 / 1.4)
    assert first["F1"] == pytest.approx(0.5)
    assert second["extra fractures identified"] == 1 and second["extra flagged"] == 3
    # flagged only by the groups and fracturing at any time: rows 1 and 6
    assert second["extra patients with a later fracture"] == 2
    same = decision_table(y, 3.0, clin, 20, np.array([0, 1, 0, 1, 0, 0, 1]))
    pd.testing.assert_frame_equal(same, t)
