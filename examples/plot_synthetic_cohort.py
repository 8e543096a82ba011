"""Contact sheet of the synthetic cohort
======================================

Several simulated patients, each baseline radiograph with its annotated vertebral
keypoints (green: Genant grade 0, orange: grade 1, red: grade 2-3) beside the
follow-up radiograph of the same anatomy. **Simulated data.** Writes
``synthetic_cohort_v<generator version>.png``; pass a folder as the first argument to write there.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fracsurv.datasets import make_spine_cohort
from fracsurv.datasets.spine import GENERATOR_VERSION
from fracsurv.vertebrae.genant import grade_vertebrae

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
cohort = make_spine_cohort(8, image_shape=(1024, 512), random_state=3)
frame, truth = cohort.frame, cohort.truth.patients
colors = {0: "lime", 1: "orange", 2: "red", 3: "red"}

fig, axes = plt.subplots(2, 8, figsize=(20, 12))
for k in range(8):
    row = frame.iloc[k]
    pts = np.array([v["points"] for v in row["keypoints"]])
    grades = grade_vertebrae(pts)[0]
    ax = axes[k // 4, 2 * (k % 4)]
    ax.imshow(row["image"], cmap="gray")
    for p, g in zip(pts, grades):
        ax.plot(p[[0, 1, 2, 5, 4, 3, 0], 0], p[[0, 1, 2, 5, 4, 3, 0], 1], color=colors[g], lw=0.8)
    ax.set_title(f"{truth['fov'][k]}\nage {row['age']:.0f}, {row['sex']}, VF={row['prevalent_vf']}",
                 fontsize=9)
    fu = axes[k // 4, 2 * (k % 4) + 1]
    fu.imshow(row["followup_image"], cmap="gray")
    fu.set_title(f"follow-up, age {row['followup_age']:.0f}", fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle(f"fracsurv synthetic cohort, generator v{GENERATOR_VERSION} — SIMULATED DATA",
             fontsize=14)
fig.tight_layout()
path = out / f"synthetic_cohort_v{GENERATOR_VERSION}.png"
fig.savefig(path, dpi=60)
print(f"wrote {path}")
