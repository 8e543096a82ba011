"""The Diff-X study's Cox analyses (Tables 4 and 5) on the demo's test split.

Cut-points of the risk groups come from the training split (``RiskGrouper``);
every model here is fitted on the *test* split, without a penalty, as the study
did. Terms that are constant on the test split (a small cohort may have no LH
patient) are left out with a notice rather than failing the whole table.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fracsurv.demo.context import DemoContext
from fracsurv.metrics import likelihood_ratio_test
from fracsurv.stratify import CoxTables, cox_table, forest_figure, format_cox_table

__all__ = ["stage_hazard_ratios"]

CLINICAL_TERMS = {"Age (per 1-year increase)": ["age"], "Sex (female vs male)": ["female"],
                  "BMI (per 1 kg/m2 increase)": ["bmi"]}
RISK_GROUP = {"Risk group": {"risk_LH": "LH", "risk_HIGH": "HIGH"}}
FRAX = "Clinical risk score (FRAX stand-in, per 1 SD increase)"


def _usable(frame: pd.DataFrame, terms: Mapping[str, Any], models: Mapping[str, Sequence[str]],
            comparisons: Sequence[tuple[str, str]]
            ) -> tuple[dict, dict, list, list[str]]:
    """Terms, models and comparisons less those with a constant column on ``frame``."""
    dropped = {t for t, cols in terms.items()
               if any(frame[c].astype(float).nunique() < 2 for c in cols)}
    terms = {t: v for t, v in terms.items() if t not in dropped}
    models = {m: [t for t in ts if t not in dropped] for m, ts in models.items()}
    models = {m: ts for m, ts in models.items() if len(ts) > 0}
    known = set(terms) | set(models)
    comps = [(r, f) for r, f in comparisons if r in known and f in known]
    return terms, models, comps, sorted(dropped)


def _fit(ctx: DemoContext, frame: pd.DataFrame, terms: dict, models: dict,
         comparisons: list, **kwargs: Any) -> CoxTables | None:
    terms, models, comps, dropped = _usable(frame, terms, models, comparisons)
    if dropped:
        ctx.report.add_notice(f"left out, constant on the test split: {', '.join(dropped)}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tables = cox_table(frame, ctx.y_test, {t: terms[t] for t in terms}, models=models,
                               comparisons=comps, **kwargs)
    except (ValueError, np.linalg.LinAlgError) as exc:  # lifelines' ConvergenceError is a ValueError
        why = _eventless_levels(frame, ctx.y_test["event"], terms)
        first = str(exc).split(". ")[0]
        ctx.report.add_warning(f"Cox models not estimable on this test split: "
                               f"{why + '; ' if why else ''}lifelines: {first}")
        return None
    _report_convergence(ctx, caught)
    return tables


def _eventless_levels(frame: pd.DataFrame, event: np.ndarray, terms: dict) -> str:
    """Indicator columns whose 1-rows hold no event: their hazard ratio has no finite estimate."""
    out = []
    event = np.asarray(event, bool)
    for cols in terms.values():
        for c in cols:
            v = pd.to_numeric(frame[c], errors="coerce").to_numpy()
            ones = v == 1
            if set(np.unique(v[np.isfinite(v)])) <= {0.0, 1.0} and ones.any() \
                    and not event[ones].any():
                out.append(f"{c} = 1 for {int(ones.sum())} patients with 0 events")
    return ", ".join(out) + (" (no finite hazard ratio)" if out else "")


def _report_convergence(ctx: DemoContext, caught: list[warnings.WarningMessage]) -> None:
    """lifelines' convergence warnings (separation, collinearity) shown in the report."""
    from lifelines.exceptions import ConvergenceWarning

    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            first = str(w.message).strip().splitlines()[0].split(" For example")[0].strip()
            if first not in seen:
                seen.append(first)
        else:  # other warnings keep their normal route
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if seen:
        ctx.report.add_warning(
            f"lifelines reported {len(seen)} convergence problem(s) on the test split; the "
            "hazard ratios concerned may be unreliable (small events count, separation or "
            "collinearity): " + " | ".join(seen[:3]) + (" | ..." if len(seen) > 3 else ""))


def _show(ctx: DemoContext, tables: CoxTables, name: str, columns: list[str]) -> None:
    rep = ctx.report
    rep.add_table(format_cox_table(tables, [m for m in columns if m in tables.models.index]),
                  key=f"{name} layout", caption=(
                      f"{name}: hazard ratios (95% CI), univariable and multivariable Cox "
                      f"models on the test split (n = {len(ctx.y_test)}, "
                      f"{int(ctx.y_test['event'].sum())} events; lifelines, no penalty)"))
    rep.add_table(tables.hr, key=f"{name} hazard ratios", index=False,
                  caption=f"{name}: every hazard ratio, tidy")
    rep.add_table(tables.models.drop(columns=["kind"]), key=f"{name} model fit",
                  caption=f"{name}: model fit (C-index, LR chi-square against the null model)")
    if len(tables.comparisons):
        rep.add_table(tables.comparisons, key=f"{name} LR tests", index=False,
                      caption=f"{name}: likelihood-ratio tests of the nested models the study "
                              "reports (unpenalised log-likelihoods)")
    rep.add_figure(forest_figure(tables.hr), key=f"{name} forest",
                   caption=f"{name}: forest plot of the hazard ratios (log scale)")
    if len(tables.ph):
        rep.add_table(tables.ph, key=f"{name} PH check", index=False,
                      caption=f"{name}: proportional-hazards check (scaled Schoenfeld residuals "
                              "vs rank of time, lifelines)")
        bad = tables.ph[tables.ph["p"] < 0.05]
        for _, r in bad.iterrows():
            rep.add_warning(f"{name}, {r['model']}: proportional hazards rejected for "
                            f"{r['covariate']} (p = {r['p']:.3f}); its HR averages a hazard "
                            "ratio that changes over follow-up")


def stage_hazard_ratios(ctx: DemoContext) -> None:
    """Table 4 (risk groups, clinical model, FRAX stand-in) and Table 5 (pVF scores)."""
    rep = ctx.report
    rep.section("Cox hazard ratios (test split)", "hr")
    test = ctx.test.copy()
    have_groups = "risk_group" in test.columns
    frax_sd = float(ctx.train["clinical_risk_score"].astype(float).std()) \
        if "clinical_risk_score" in test.columns else np.nan
    if have_groups:
        t_b, t_f = ctx.fitted["RiskGrouper"].thresholds_
        test["bpvf_high"] = (test["bpvf"] >= t_b).astype(float)
        test["gpvf_high"] = (test["gpvf"] >= t_f).astype(float)
        rep.add_text(f"Risk-group cut-points from the training split only: BpVF {t_b:.3f}, "
                     f"GpVF {t_f:.3f}; the clinical risk score's SD ({frax_sd:.2f}) is the "
                     "training split's.")
        terms = {**RISK_GROUP, **CLINICAL_TERMS}
        models = {"Clinical (age, sex, BMI)": list(CLINICAL_TERMS),
                  "Model 1": ["Risk group", *CLINICAL_TERMS]}
        comps = [("Clinical (age, sex, BMI)", "Model 1"), ("Risk group", "Model 1")]
        per = {}
        if np.isfinite(frax_sd) and frax_sd > 0:
            terms[FRAX] = ["clinical_risk_score"]
            models["Model 2"] = ["Risk group", FRAX]
            comps += [(FRAX, "Model 2"), ("Risk group", "Model 2")]
            per["clinical_risk_score"] = frax_sd
        t4 = _fit(ctx, test, terms, models, comps, references={"Risk group": "LL"}, per=per)
        if t4 is not None:
            _show(ctx, t4, "Table 4", ["Model 1", "Model 2"])
    else:
        t4 = None
    if "bpvf" not in test.columns:
        rep.add_notice("no whole-image pVF score in this run: Table 5 left out")
        return
    score_terms = {"BpVF (per 0.1-point increase)": ["bpvf"]}
    per5 = {"bpvf": 0.1}
    if "gpvf" in test.columns:
        score_terms["GpVF (per 0.1-point increase)"] = ["gpvf"]
        per5["gpvf"] = 0.1
    if have_groups:
        score_terms["BpVF group (high vs low)"] = {"bpvf_high": "high"}
        score_terms["GpVF group (high vs low)"] = {"gpvf_high": "high"}
    scores = [t for t in score_terms if t.endswith("increase)")]
    models5 = {"Clinical model": list(CLINICAL_TERMS),
               "Clinical + BpVF": [scores[0], *CLINICAL_TERMS],
               "Score-based model": [*scores, *CLINICAL_TERMS]}
    comps5 = [("Clinical model", "Score-based model"),
              ("Clinical + BpVF", "Score-based model")] if len(scores) > 1 else \
        [("Clinical model", "Clinical + BpVF")]
    t5 = _fit(ctx, test, {**score_terms, **CLINICAL_TERMS}, models5, comps5, per=per5)
    if t5 is None:
        return
    _show(ctx, t5, "Table 5", ["Score-based model", "Clinical model"])
    if t4 is not None and "BpVF group (high vs low) (univariable)" in t5.models.index \
            and "Risk group (univariable)" in t4.models.index:
        # the binary BpVF group is the HIGH indicator, so it is nested in the three groups
        a = t5.models.loc["BpVF group (high vs low) (univariable)"]
        b = t4.models.loc["Risk group (univariable)"]
        lr = likelihood_ratio_test(b["log-likelihood"], a["log-likelihood"], int(b["df"]),
                                   int(a["df"]))
        rep.add_table(pd.DataFrame([{"reduced": "BpVF group (high vs low)",
                                     "full": "Risk group (LL / LH / HIGH)",
                                     "LR chi2 reduced": a["LR chi2"], "LR chi2 full": b["LR chi2"],
                                     "LR chi2": lr.statistic, "df": lr.df, "p": lr.p_value}]),
                      index=False, key="risk groups vs BpVF group",
                      caption="Three risk groups against the binary BpVF group (the study: "
                              "LR chi-square 81.07 vs 97.9)")
