"""Stages 8-9 of ``fracsurv demo``: survival analysis and examples."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from fracsurv._atomic import atomic_write_text
from fracsurv._base import survival_arrays
from fracsurv.demo.context import DemoContext, eval_times
from fracsurv.demo.tables import stage_hazard_ratios
from fracsurv.io import load_image
from fracsurv.stratify import (
    auc_ci,
    decision_table,
    km_figure,
    logrank_tables,
    median_survival_table,
    roc_figure,
    td_auc_figure,
    td_auc_table,
)
from fracsurv.stratify.grouper import HIGH_RISK_GROUPS

__all__ = ["stage_analysis", "stage_examples"]


def _km_section(ctx: DemoContext, groups: pd.Series) -> None:
    rep = ctx.report
    present = groups.astype(str).nunique()
    if present < 2:
        rep.add_notice("every test patient falls in one group: no curves to compare")
        return
    rep.add_figure(km_figure(ctx.y_test, groups, "test split"), key="km",
                   caption="Cumulative incidence of fracture (1 - Kaplan-Meier) with censor "
                           "ticks and the numbers at risk, censored and with an event")
    pw, overall = logrank_tables(ctx.y_test, groups)
    rep.add_table(overall, key="logrank", caption="Log-rank test (all groups)")
    rep.add_table(pw, key="logrank pairwise", index=False,
                  caption="Pairwise log-rank tests; p (Holm) adjusted for the number of pairs")
    rep.add_table(median_survival_table(ctx.y_test, groups), key="median survival",
                  caption="Per group: n, events, censored and the median time to fracture "
                          "(Kaplan-Meier, 95% CI)", floatfmt="{:.2f}")


def _roc_section(ctx: DemoContext) -> None:
    test = ctx.test
    scores = {name: test[col].to_numpy(float) for name, col in
              (("crop pVF scorer (pvf)", "pvf"),)
              if col in test.columns}
    label = test["prevalent_vf"].to_numpy().astype(bool)
    if not scores or label.sum() < 2 or (~label).sum() < 2:
        return
    rows = {name: auc_ci(label, s) for name, s in scores.items()}
    ctx.report.add_table(pd.DataFrame(rows).T, key="pvf auroc",
                         caption="pVF scores against the true prevalent-fracture label "
                                 "(test split): AUROC with DeLong 95% CI")
    ctx.report.add_figure(roc_figure(label, scores, "prevalent vertebral fracture"),
                          key="pvf roc", caption="ROC curves of the pVF scorers (test split)")
    for name, r in rows.items():
        ctx.report.add_value(f"AUROC {name}", r["auc"])


def _write_test_split(ctx: DemoContext) -> None:
    """The test split's analysed columns, so every table can be recomputed from files."""
    cols = [c for c in ("age", "female", "bmi", "clinical_risk_score", "prevalent_vf", "pvf",
                        "bpvf", "gpvf", "risk_group") if c in ctx.test.columns]
    event, time = survival_arrays(ctx.y_test)
    frame = ctx.test[cols].reset_index(drop=True).assign(time=time, event=event.astype(int))
    for name, risk in ctx.risks.items():
        frame[f"risk: {name}"] = risk
    atomic_write_text(ctx.out / "data" / "test_split.csv", frame.to_csv(index=False))


def stage_analysis(ctx: DemoContext) -> None:
    rep = ctx.report
    rep.section("Time-dependent AUROC", "td-auc")
    times = eval_times(ctx)
    table = td_auc_table(ctx.y_train, ctx.y_test, ctx.risks, times)
    rep.add_table(table, key="td auc", caption="Cumulative/dynamic AUC (IPCW) on the test split")
    rep.add_figure(td_auc_figure(table), key="td auc",
                   caption="Time-dependent AUROC of the survival models")

    if "risk_group" in ctx.test.columns:
        rep.section("Kaplan-Meier by risk group", "km")
        t_b, t_f = ctx.fitted["RiskGrouper"].thresholds_
        rep.add_value("cut-points", {"bpvf": float(t_b), "gpvf": float(t_f)})
        rep.add_text(f"LL / LH / HIGH from the baseline (BpVF) and generated 10-year (GpVF) "
                     f"image scores; cut-points chosen on the training split by maximally "
                     f"selected log-rank statistics: BpVF {t_b:.3f}, GpVF {t_f:.3f}.")
        _km_section(ctx, ctx.test["risk_group"].reset_index(drop=True))
    elif "pvf" in ctx.test.columns:
        rep.section("Kaplan-Meier by baseline pVF", "km")
        cut = float(np.median(ctx.train["pvf"]))
        rep.add_notice(f"no generated score in this run: groups are baseline pVF below / at or "
                       f"above the training median ({cut:.3f}).")
        _km_section(ctx, pd.Series(pd.Categorical(
            np.where(ctx.test["pvf"] >= cut, "high pVF", "low pVF"),
            categories=["low pVF", "high pVF"], ordered=True)))
    if "prevalent_vf" in ctx.test.columns:
        rep.section("pVF scorer: ROC", "roc")
        _roc_section(ctx)

    stage_hazard_ratios(ctx)

    if "clinical_risk_score" in ctx.test.columns:
        rep.section("Clinical decision table", "decision")
        if "risk_group" in ctx.test.columns:
            high = ctx.test["risk_group"].isin(HIGH_RISK_GROUPS).to_numpy()
            what = "the LH or HIGH risk group"
        else:
            high = (ctx.test["pvf"] >= 0.5).to_numpy() if "pvf" in ctx.test.columns else \
                np.zeros(len(ctx.test), bool)
            what = "a high pVF score"
        horizon = float(np.median(survival_arrays(ctx.y_test)[1]))
        rep.add_table(decision_table(ctx.y_test, horizon, ctx.test["clinical_risk_score"], 20.0,
                                     high), key="decision",
                      caption=f"Fracture by {horizon:.1f} years: clinical risk score (FRAX "
                              f"stand-in) >= 20 % alone vs combined with {what}")
    _write_test_split(ctx)


def stage_examples(ctx: DemoContext) -> None:
    if "keypoints" not in ctx.test.columns:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = ctx.report
    rep.section("Example radiographs", "examples")
    det = ctx.detection
    if det is not None:
        table = {"sensitivity": f"{det['sensitivity']:.3f}",
                 "precision": f"{det['precision']:.3f}",
                 "median point error (px)": f"{det['median_point_error_px']:.2f}",
                 "vertebrae (true / predicted)": f"{det['n_true']} / {det['n_pred']}"}
        if ctx.test["prevalent_vf"].nunique() == 2:
            table["AUROC of max predicted grade for prevalent VF"] = (
                f"{roc_auc_score(ctx.test['prevalent_vf'], ctx.test['max_grade']):.3f}")
        rep.add_table(pd.DataFrame({"VertebraCropper (test split)": table}),
                      caption="Learned vertebra detection against the annotated keypoints "
                              "(a match: centre within half the true vertebral height)")
    rows = ctx.test.head(4)
    fig, axes = plt.subplots(1, 2 * len(rows), figsize=(3.2 * len(rows), 4.2))
    for k, (_, row) in enumerate(rows.iterrows()):
        img = load_image(row["image"])
        ax = axes[2 * k]
        title = f"baseline, vf={row.get('prevalent_vf', '?')}"
        if "vertebrae" in row.index:
            from fracsurv.vertebrae import draw_vertebrae

            draw_vertebrae(img, row["vertebrae"], ax=ax, show_boxes=False)
        else:
            ax.imshow(img, cmap="gray")
            for v in row.get("keypoints", []) or []:
                p = np.asarray(v["points"])
                ax.plot(p[[0, 1, 2, 5, 4, 3, 0], 0], p[[0, 1, 2, 5, 4, 3, 0], 1], "r-", lw=0.5)
        ax.set_title(title, fontsize=8)
        fu = row.get("followup_image")
        if isinstance(fu, str):
            axes[2 * k + 1].imshow(load_image(fu), cmap="gray")
            axes[2 * k + 1].set_title(f"follow-up, age {row.get('followup_age', 0):.0f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    rep.add_figure(fig, "Test patients: keypoints, levels and Genant grades found by "
                        "VertebraCropper (annotated keypoints in red when it is absent), "
                        "and the real follow-up image")
