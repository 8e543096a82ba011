"""Stage 10 of ``fracsurv demo``: where the pVF scorer looks, and the generated futures."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd

from fracsurv.demo.context import DemoContext
from fracsurv.demo.data import future_crop_scores, to_scorer_domain
from fracsurv.io import load_image
from fracsurv.stratify import agreement_table, bland_altman_figure

__all__ = ["cam_body_share", "cam_share_summary", "stage_explain"]

#: Outline of a vertebral body through its six keypoints (data contract order).
_OUTLINE = [0, 1, 2, 5, 4, 3]


def cam_body_share(stacker: Any, image_shape: tuple[int, int], vertebrae: list[dict[str, Any]],
                   maps: np.ndarray) -> list[tuple[float, float, float]]:
    """Per filled crop: (share of the Grad-CAM mass inside the vertebral body, body's
    area share, the vertebra's Genant grade).

    ``maps`` are one patient's per-crop Grad-CAM maps (``PVFScorer.grad_cam`` of its
    stack, at the scorer's input size). Each map is stretched over the crop, the
    body outline (the six keypoints of the vertebra in that slot) is moved into
    the crop's pixels (:meth:`CropStacker.slot_placements`), and both shares are
    taken over the crop region that holds image pixels. A map that ignores the
    body puts its area share inside it; one that looks at the body puts more. The
    grade is the vertebra's ``"grade"`` (the cropper's, for detections; 0 if none).
    """
    from skimage.draw import polygon2mask
    from skimage.transform import resize

    h, w = stacker._sizes(image_shape)[0]
    out = []
    for cam, slot in zip(maps, stacker.slot_placements(image_shape, vertebrae), strict=True):
        if slot is None:
            continue
        index, ((x0, y0, _, _), (top, left, ch, cw), scale) = slot
        cam = resize(np.asarray(cam, float), (h, w), order=1)[top:top + ch, left:left + cw]
        pts = np.asarray(vertebrae[index]["points"], float)[_OUTLINE]
        rows, cols = (pts[:, 1] - y0) * scale, (pts[:, 0] - x0) * scale
        body = polygon2mask((ch, cw), np.stack([rows, cols], axis=1))
        if cam.sum() > 0 and body.any():
            out.append((float(cam[body].sum() / cam.sum()), float(body.mean()),
                        float(vertebrae[index].get("grade", 0) or 0)))
    return out


def cam_share_summary(shares: list[tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    """:func:`cam_body_share` triples summarised for all crops and for those graded >= 1.

    Per group (``"all"``, and ``"fractured"`` when there is one): ``n_crops``, the mean
    ``mass_in_body`` and ``body_area_share``, their mean difference ``excess`` and the
    ``share_of_crops_above_area``.
    """
    mass, area, grade = np.asarray(shares, float).reshape(-1, 3).T
    out = {}
    for label, sel in (("all", grade >= 0), ("fractured", grade >= 1)):
        if sel.any():
            out[label] = {"n_crops": int(sel.sum()), "mass_in_body": float(mass[sel].mean()),
                          "body_area_share": float(area[sel].mean()),
                          "excess": float((mass[sel] - area[sel]).mean()),
                          "share_of_crops_above_area": float((mass[sel] > area[sel]).mean())}
    return out


#: The demo table's rows and columns for :func:`cam_share_summary`'s keys.
_SHARE_ROWS = {"all": "all crops", "fractured": "crops graded fractured"}
_SHARE_COLUMNS = {"n_crops": "crops", "mass_in_body": "Grad-CAM mass inside the body",
                  "body_area_share": "body's area share (a map blind to anatomy)",
                  "share_of_crops_above_area": "crops with more mass than area inside"}


def _grad_cam_section(ctx: DemoContext) -> None:
    from fracsurv.scoring.gradcam import grad_cam_figure

    scorer, cropper = ctx.fitted["PVFScorer"], ctx.fitted["VertebraCropper"]
    if getattr(scorer, "crop_encoder", None) != "shared":
        return  # a channels encoder has one map for the whole stack, not one per vertebra
    stacker = cropper.stacker()
    test = ctx.test
    n = min(len(test), 12 if ctx.tiny else 60)
    shares: list[tuple[float, float, float]] = []
    panels, maps_shown, titles = [], [], []
    fractured = set(test.index[test["prevalent_vf"] == 1][:2])
    normal = set(test.index[test["prevalent_vf"] == 0][:2])
    for idx in list(test.index[:n]) + sorted((fractured | normal) - set(test.index[:n])):
        row = test.loc[idx]
        stack = load_image(row["crops"]) if isinstance(row["crops"], str) else row["crops"]
        maps = scorer.grad_cam([stack])
        shape = load_image(row["image"]).shape
        if idx in test.index[:n]:
            shares += cam_body_share(stacker, shape, row["vertebrae"], maps)
        if idx in fractured or idx in normal:
            slots = stacker.slot_placements(shape, row["vertebrae"])
            filled = [k for k, s in enumerate(slots) if s is not None]
            grades = [row["vertebrae"][slots[k][0]].get("grade", 0) for k in filled]
            k = filled[int(np.argmax(grades))] if filled else 0
            panels.append(np.asarray(stack)[k])
            maps_shown.append(maps[k])
            titles.append(f"vf={int(row['prevalent_vf'])}, pVF {row['pvf']:.2f}, "
                          f"grade {max(grades) if grades else 0}")
    ctx.report.section("Grad-CAM of the pVF scorer", "gradcam")
    layer = scorer.default_cam_layer()
    if shares:
        summary = cam_share_summary(shares)
        ctx.report.add_value("Grad-CAM mass inside vertebral bodies", summary["all"]["mass_in_body"])
        ctx.report.add_value("Grad-CAM body area share", summary["all"]["body_area_share"])
        table = (pd.DataFrame.from_dict(summary, orient="index")[list(_SHARE_COLUMNS)]
                 .rename(index=_SHARE_ROWS, columns=_SHARE_COLUMNS))
        ctx.report.add_table(table,
                             key="gradcam body share",
                             caption=f"Does the scorer look at the vertebral bodies? Grad-CAM "
                                     f"({layer}) of each detected crop of {n} test patients "
                                     "against the body outline of its six keypoints; "
                                     "'fractured' = graded >= 1 by the cropper")
    if panels:
        ctx.report.add_figure(grad_cam_figure(panels, np.stack(maps_shown), titles=titles),
                              f"Where the crop pVF scorer looks (Grad-CAM, {layer}): the "
                              "most deformed vertebra of two fractured and two normal test "
                              "patients")


def _futures_section(ctx: DemoContext) -> None:
    """Generated 10-year images next to the baseline and the real follow-up, and the
    Diff-X study's clinical fidelity check (generated vs real follow-up pVF)."""
    import matplotlib.pyplot as plt

    rep, gen = ctx.report, ctx.fitted["DiffXGenerator"]
    rep.section("Generated future radiographs (DiffXGenerator)", "futures")
    rows = ctx.test.head(3)
    n_gen = min(2, len(rows["future_images"].iloc[0]))
    fig, axes = plt.subplots(len(rows), 2 + n_gen, figsize=(1.75 * (2 + n_gen), 3.4 * len(rows)),
                             squeeze=False)
    for k, (_, row) in enumerate(rows.iterrows()):
        futures = to_scorer_domain(ctx, [load_image(f) for f in row["future_images"]])
        panels = [(row["image"], f"baseline, age {row['age']:.0f}"),
                  *[(futures[j], f"generated +10 y, seed {j}" +
                     (f"\nGpVF {row['gpvf']:.2f}" if j == 0 else "")) for j in range(n_gen)],
                  (row.get("followup_image"), f"real follow-up, age {row['followup_age']:.0f}")]
        for ax, (img, title) in zip(axes[k], panels, strict=True):
            if img is not None and not (isinstance(img, float) and np.isnan(img)):
                ax.imshow(load_image(img), cmap="gray")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    rep.add_figure(fig, f"Baseline, generated 10-year future{'s' if n_gen > 1 else ''} and the "
                        "real follow-up")
    sub = ctx.test.dropna(subset=["followup_age"]).head(12 if ctx.tiny else 40)
    # generated at the real follow-up's age, cropped at the baseline's vertebrae ...
    at_fu = copy.deepcopy(gen).set_params(horizons=("last",), cache_dir=None).transform(sub)
    gen_scores = future_crop_scores(ctx, at_fu, gen.n_seeds)
    # ... against the real follow-up, loaded, cropped and scored like any baseline
    real = ctx.fitted["DicomLoader"].transform(
        sub[["followup_image"]].rename(columns={"followup_image": "image"}))
    real = ctx.fitted["PVFScorer"].transform(ctx.fitted["VertebraCropper"].transform(real))
    rep.add_table(agreement_table({"GpVF at follow-up age vs pVF of the real follow-up":
                                   (gen_scores, real["pvf"].to_numpy(float))}),
                  caption=f"Clinical fidelity on {len(sub)} test patients (the Diff-X study: "
                          "r = 0.655, mean difference -0.06 ± 0.20)", floatfmt="{:.3f}")
    rep.add_figure(bland_altman_figure(gen_scores, real["pvf"].to_numpy(float),
                                       ("generated", "real follow-up")),
                   "Generated vs real follow-up pVF: scatter and Bland-Altman")


def stage_explain(ctx: DemoContext) -> None:
    if "PVFScorer" in ctx.fitted and "vertebrae" in ctx.test.columns:
        _grad_cam_section(ctx)
    if "DiffXGenerator" in ctx.fitted:
        _futures_section(ctx)
