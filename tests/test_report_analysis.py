"""Issue 21: p-value format, Holm, unpenalised LR tests, PH check, medians, calibration,
AUROC CI, forest/ROC figures and the report's machine-readable files."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.datasets import load_gbsg2
from sksurv.util import Surv

from fracsurv.metrics import format_p, holm_adjust
from fracsurv.report.html import Report, is_p_column
from fracsurv.stratify import (
    auc_ci,
    calibration_figure,
    calibration_table,
    cox_table,
    forest_figure,
    logrank_tables,
    median_survival_table,
    roc_figure,
)


@pytest.fixture(scope="module")
def gbsg():
    X, y = load_gbsg2()
    X = pd.DataFrame({"age": X["age"].astype(float), "tsize": X["tsize"].astype(float),
                      "pnodes": X["pnodes"].astype(float),
                      "horTh": (X["horTh"] == "yes").astype(float),
                      "g2": (X["tgrade"] == "II").astype(float),
                      "g3": (X["tgrade"] == "III").astype(float)})
    return X, Surv.from_arrays(y["cens"], y["time"] / 365.25)


TERMS = {"Grade": {"g2": "II", "g3": "III"}, "Age": ["age"], "Size": ["tsize"],
         "Nodes": ["pnodes"], "Hormone": ["horTh"]}
MODELS = {"Clinical": ["Age", "Size", "Nodes"], "Model 1": ["Grade", "Age", "Size", "Nodes"],
          "Model 2": ["Grade", "Hormone"]}


def _lifelines(X, y, cols, penalizer=0.0):
    from lifelines import CoxPHFitter

    df = X[cols].assign(T=y["time"], E=y["event"].astype(int))
    return CoxPHFitter(penalizer=penalizer).fit(df, "T", "E")


def test_format_p_and_holm():
    assert [format_p(v) for v in (0.0004, 0.001, 0.0421, 1.0, np.nan, None)] == [
        "<0.001", "0.001", "0.042", "1.000", "", ""]
    assert format_p(0.00004, digits=4) == "<0.0001"
    # Holm by hand: sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.06 (running max)
    np.testing.assert_allclose(holm_adjust([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    adj = holm_adjust([0.5, np.nan, 0.9, 0.001])
    assert np.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2, 3]], [1.0, 1.0, 0.003])  # 0.5*2 capped, 0.9*1 -> max
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.2, 1.5])
    assert all(is_p_column(c) for c in ("p", "P value", "p (Holm)", ("Model 1", "P value")))
    assert not any(is_p_column(c) for c in ("prevalent", "HR", "pvf"))


def test_logrank_pairwise_has_holm_column(gbsg):
    X, y = gbsg
    g = np.where(X["g3"] == 1, "III", np.where(X["g2"] == 1, "II", "I"))
    pw, _ = logrank_tables(y, g)
    np.testing.assert_allclose(pw["p (Holm)"], holm_adjust(pw["p"]))
    assert (pw["p (Holm)"] >= pw["p"]).all()


def test_cox_table_lr_tests_are_unpenalised_and_hrs_penalised(gbsg):
    X, y = gbsg
    t = cox_table(X, y, TERMS, models=MODELS, references={"Grade": "I"}, penalizer=0.5,
                  comparisons=[("Clinical", "Model 1"), ("Grade", "Model 2")])
    full, red = _lifelines(X, y, ["g2", "g3", "age", "tsize", "pnodes"]), \
        _lifelines(X, y, ["age", "tsize", "pnodes"])
    comp = t.comparisons.set_index(["reduced", "full"])
    assert list(comp.index) == [("Clinical", "Model 1"), ("Grade (univariable)", "Model 2")]
    want = 2 * (full.log_likelihood_ - red.log_likelihood_)
    assert comp.loc[("Clinical", "Model 1"), "LR chi2"] == pytest.approx(want, rel=1e-6)
    # the penalised log-likelihoods would give another (wrong) statistic
    pen = 2 * (_lifelines(X, y, ["g2", "g3", "age", "tsize", "pnodes"], 0.5).log_likelihood_
               - _lifelines(X, y, ["age", "tsize", "pnodes"], 0.5).log_likelihood_)
    assert abs(pen - want) > 1.0
    assert t.models.loc["Model 1", "LR chi2"] == pytest.approx(
        full.log_likelihood_ratio_test().test_statistic, rel=1e-6)
    # hazard ratios stay the penalised fit's
    hr = t.hr.set_index(["model", "covariate"])
    pen_fit = _lifelines(X, y, ["g2", "g3", "age", "tsize", "pnodes"], 0.5)
    assert hr.loc[("Model 1", "g3"), "HR"] == pytest.approx(pen_fit.summary.loc["g3", "exp(coef)"])


def test_cox_table_per_unit_default_comparisons_and_bad_pairs(gbsg):
    X, y = gbsg
    t = cox_table(X, y, TERMS, models=MODELS, per={"tsize": 10.0}, check_ph=False)
    ref = _lifelines(X.assign(tsize=X["tsize"] / 10), y, ["tsize"])
    hr = t.hr.set_index(["model", "covariate"])
    assert hr.loc[("Size (univariable)", "tsize"), "HR"] == pytest.approx(
        ref.summary.loc["tsize", "exp(coef)"])
    per_mm = _lifelines(X, y, ["tsize"]).summary.loc["tsize", "exp(coef)"]
    assert hr.loc[("Size (univariable)", "tsize"), "HR"] == pytest.approx(per_mm ** 10)
    # default: each model against its largest nested models only
    pairs = set(zip(t.comparisons["reduced"], t.comparisons["full"], strict=True))
    assert ("Clinical", "Model 1") in pairs and ("Grade (univariable)", "Model 1") in pairs
    assert ("Age (univariable)", "Model 1") not in pairs  # Clinical contains it
    assert t.ph.empty
    with pytest.raises(ValueError, match="not nested"):
        cox_table(X, y, TERMS, models=MODELS, comparisons=[("Model 2", "Model 1")])
    with pytest.raises(ValueError, match="neither a model nor a term"):
        cox_table(X, y, TERMS, models=MODELS, comparisons=[("nope", "Model 1")])
    with pytest.raises(ValueError, match="per"):
        cox_table(X, y, TERMS, models=MODELS, per={"tsize": 0})


def test_ph_check_equals_lifelines(gbsg):
    from lifelines.statistics import proportional_hazard_test

    X, y = gbsg
    t = cox_table(X, y, TERMS, models={"Model 1": MODELS["Model 1"]})
    cols = ["g2", "g3", "age", "tsize", "pnodes"]
    fit = _lifelines(X, y, cols)
    df = X[cols].assign(T=y["time"], E=y["event"].astype(int))
    ref = proportional_hazard_test(fit, df, time_transform="rank").summary
    got = t.ph.set_index("covariate")
    assert list(t.ph["model"].unique()) == ["Model 1"]
    np.testing.assert_allclose(got.loc[cols, "p"], ref.loc[cols, "p"], rtol=1e-6)
    assert (got["p"] < 0.05).any()  # GBSG2's grade violates PH: the check can fail


def test_median_survival_table_equals_lifelines(gbsg):
    from lifelines import KaplanMeierFitter

    X, y = gbsg
    g = pd.Series(pd.Categorical(np.where(X["g3"] == 1, "III", np.where(X["g2"] == 1, "II", "I")),
                                 categories=["I", "II", "III"]))
    t = median_survival_table(y, g)
    assert list(t.index) == ["I", "II", "III"]
    m = (g == "II").to_numpy()
    kmf = KaplanMeierFitter().fit(y["time"][m], y["event"][m])
    assert t.loc["II", "median"] == pytest.approx(kmf.median_survival_time_)
    assert t.loc["II", "events"] + t.loc["II", "censored"] == t.loc["II", "n"] == m.sum()
    assert np.isnan(t.loc["I", "median"]) and "not reached" in t.loc["I", "median note"]


def test_calibration_table_against_direct_km(gbsg):
    from lifelines import KaplanMeierFitter

    X, y = gbsg
    fit = _lifelines(X, y, ["age", "tsize", "pnodes"])
    df = X.assign(T=y["time"], E=y["event"].astype(int))
    risk = 1 - fit.predict_survival_function(df, times=[3.0]).to_numpy().ravel()
    t = calibration_table(y, risk, 3.0, n_bins=10)
    assert len(t) == 10 and t["n"].sum() == len(risk)
    top = risk >= np.sort(risk)[-t["n"].iloc[-1]]
    kmf = KaplanMeierFitter().fit(y["time"][top], y["event"][top])
    assert t["observed"].iloc[-1] == pytest.approx(1 - kmf.predict(3.0))
    assert t["predicted"].iloc[-1] == pytest.approx(risk[top].mean())
    assert (t["observed low"] <= t["observed"]).all() and (t["observed"] <= t["observed high"]).all()
    assert t["predicted"].is_monotonic_increasing
    # a useless constant prediction is badly calibrated in the tails: larger error
    worse = calibration_table(y, np.full(len(risk), 0.9), 3.0)
    assert worse.attrs["mean absolute error"] > t.attrs["mean absolute error"]
    fig = calibration_figure({"Cox": t, "constant": worse})
    assert len([a for a in fig.axes if a.lines]) == 2
    with pytest.raises(ValueError, match="row 3"):
        calibration_table(y, np.where(np.arange(len(risk)) == 3, 1.5, risk), 3.0)


def test_auc_ci_and_roc_figure():
    rng = np.random.default_rng(0)
    label = rng.random(400) < 0.3
    s = label + rng.normal(0, 1.0, 400)
    ci = auc_ci(label, s)
    assert ci["auc"] == pytest.approx(roc_auc_score(label, s))
    boot = []
    for _ in range(400):
        i = rng.integers(0, 400, 400)
        boot.append(roc_auc_score(label[i], s[i]))
    assert ci["se"] == pytest.approx(np.std(boot), rel=0.2)
    assert ci["low"] < ci["auc"] < ci["high"]
    fig = roc_figure(label, {"score": s})
    text = fig.axes[0].get_legend().get_texts()[0].get_text()
    assert f"{ci['auc']:.3f} ({ci['low']:.3f}-{ci['high']:.3f})" in text
    with pytest.raises(ValueError, match="two positive"):
        auc_ci(np.array([1, 0, 0, 0]), np.arange(4.0))


def test_forest_figure_has_a_panel_per_model(gbsg):
    X, y = gbsg
    t = cox_table(X, y, TERMS, models=MODELS, references={"Grade": "I"}, check_ph=False)
    fig = forest_figure(t.hr)
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["Univariable", "Clinical", "Model 1", "Model 2"]
    labels = [lab.get_text() for lab in fig.axes[2].get_yticklabels()]
    assert labels == ["Grade: I", "Grade: II", "Grade: III", "Age", "Size", "Nodes"]


def test_report_writes_results_json_csv_png_svg(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = Report("t", banner="SIMULATED")
    rep.section("A", "a").add_table(pd.DataFrame({"HR": [1.5], "p": [0.0002]}, index=["x"]),
                                    caption="Table one", key="one")
    rep.add_table(pd.DataFrame({"v": [np.nan, 2.0]}), caption="Table one")  # same caption
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rep.add_figure(fig, "A figure").add_value("n", np.int64(3)).add_value("r", np.nan)
    rep.add_warning("PH rejected")
    rep.write(tmp_path / "report.html")
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["tables"]) == {"one", "table-one"}
    assert res["tables"]["one"]["records"] == [{"row": "x", "HR": 1.5, "p": 0.0002}]
    assert res["tables"]["table-one"]["records"][0]["v"] is None
    assert res["values"] == {"n": 3, "r": None, "warnings": ["PH rejected"]}
    assert pd.read_csv(tmp_path / "tables" / "one.csv")["p"].iloc[0] == 0.0002
    assert (tmp_path / "figures" / "a-figure.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "figures" / "a-figure.svg").read_bytes()[:400]
    html = (tmp_path / "report.html").read_text()
    assert "&lt;0.001" in html and "0.0002" not in html  # one p format in the page
    assert res["sections"][0]["tables"] == ["one", "table-one"]


def test_demo_cox_tables_show_lifelines_convergence_problems_in_the_report():
    # a covariate that separates events from non-events: lifelines warns that the
    # fit did not converge; the demo's report must say so rather than print the HR alone
    from fracsurv.demo.context import DemoContext
    from fracsurv.demo.tables import _fit
    from fracsurv.report.html import Report

    rng = np.random.default_rng(0)
    n = 60
    event = np.zeros(n, bool)
    event[:12] = True
    time = rng.exponential(5, n)
    frame = pd.DataFrame({"age": rng.normal(70, 5, n), "marker": event.astype(float)})
    ctx = DemoContext(out=None, seed=0, tiny=True, report=Report("t"))
    ctx.report.section("HR", "hr")
    ctx.y_test = np.array(list(zip(event, time, strict=True)),
                          dtype=[("event", bool), ("time", float)])
    tables = _fit(ctx, frame, {"Age": ["age"], "Marker": ["marker"]},
                  {"Both": ["Age", "Marker"]}, [])
    assert tables is not None
    warned = ctx.report.results()["values"].get("warnings", [])
    assert len(warned) == 1 and "convergence" in warned[0]


def test_demo_cox_table_names_the_level_without_events_when_it_cannot_be_fitted(monkeypatch):
    # the 800-patient demo's test split had a HIGH group of 7 patients and 0 events and
    # lifelines halted ("delta contains nan value(s)"); the report must say which level
    import fracsurv.demo.tables as demo_tables
    from fracsurv.demo.context import DemoContext
    from fracsurv.report.html import Report

    rng = np.random.default_rng(1)
    n = 80
    event = rng.random(n) < 0.3
    high = np.zeros(n)
    high[np.flatnonzero(~event)[:3]] = 1  # 3 patients, none with an event
    frame = pd.DataFrame({"age": rng.normal(70, 5, n), "risk_HIGH": high})
    ctx = DemoContext(out=None, seed=0, tiny=True, report=Report("t"))
    ctx.report.section("HR", "hr")
    ctx.y_test = np.array(list(zip(event, rng.exponential(5, n), strict=True)),
                          dtype=[("event", bool), ("time", float)])

    def halt(*args, **kwargs):
        from lifelines.exceptions import ConvergenceError

        raise ConvergenceError("delta contains nan value(s). Convergence halted. Please see")

    monkeypatch.setattr(demo_tables, "cox_table", halt)
    tables = demo_tables._fit(ctx, frame, {"Age": ["age"], "Risk group": {"risk_HIGH": "HIGH"}},
                              {"Both": ["Age", "Risk group"]}, [])
    assert tables is None
    warned = ctx.report.results()["values"]["warnings"]
    assert len(warned) == 1
    assert "risk_HIGH = 1 for 3 patients with 0 events" in warned[0]
    assert "age" not in warned[0].split("lifelines")[0]  # only the eventless level is named
    assert "delta contains nan value(s)" in warned[0]
