"""Seed study 001: clinical-only vs image + clinical fusion survival models
=========================================================================

The multimodal study's comparison on the built-in synthetic cohort (**simulated
data**): a clinical Cox model, DeepSurv on the clinical columns, and
``FusionSurvival`` on 13 vertebra crops + clinical columns with intermediate and late
fusion, compared by 3-fold cross-validated Harrell's C (scikit-learn's
``cross_validate``; every model sees the same folds).

The crops come from the cohort's *annotated* keypoints (``CropStacker``), a
truth-framed reference; the deployable path detects them with ``VertebraCropper``
(as ``make demo`` does). Tiny CPU settings (a 10-layer ResNet, 300 patients at
256x128, few epochs): a few minutes on 2 cores. The numbers show the API, not the
study's results.
"""

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from sksurv.linear_model import CoxPHSurvivalAnalysis

from fracsurv import CropStacker
from fracsurv.datasets import make_spine_cohort
from fracsurv.preprocessing import SelectColumns
from fracsurv.survival import DeepSurvRegressor, FusionSurvival

cohort = make_spine_cohort(300, image_shape=(256, 128), random_state=7)
X, y = cohort.frame, cohort.target
clinical = ["age", "female", "bmi", "clinical_risk_score"]
event = y[y.dtype.names[0]]
print(f"{len(X)} patients, {int(event.sum())} fracture events")


# %%
# Four models, each a Pipeline.
def fusion(mode: str) -> Pipeline:
    return Pipeline([
        ("crops", CropStacker(crop_size=(32, 32))),
        ("model", FusionSurvival(image_input="crops", backbone="resnet10-tiny", fusion=mode,
                                 clinical_columns=clinical, max_epochs=8, batch_size=32,
                                 lr=2e-3, validation_fraction=0.0, random_state=0)),
    ])


models = {
    "Cox PH (clinical)": Pipeline([("cols", SelectColumns(clinical)),
                                   ("cox", CoxPHSurvivalAnalysis(alpha=1e-3))]),
    "DeepSurv (clinical)": Pipeline([("cols", SelectColumns(clinical)),
                                     ("net", DeepSurvRegressor(hidden_units=(16,),
                                                               optimizer="lbfgs", lr=1.0,
                                                               max_epochs=20,
                                                               random_state=0))]),
    "FusionSurvival intermediate": fusion("intermediate"),
    "FusionSurvival late": fusion("late"),
}

# %%
# The same event-stratified folds for every model; the default score is Harrell's C.
folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, event))
rows = {}
for name, model in models.items():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = cross_validate(model, X, y, cv=folds)
    rows[name] = {f"fold {k + 1}": c for k, c in enumerate(cv["test_score"])}
    rows[name]["mean"] = float(np.mean(cv["test_score"]))
table = pd.DataFrame(rows).T.round(3)
print(table.to_string())
