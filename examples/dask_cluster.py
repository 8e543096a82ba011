"""A dask cluster: grid search, image loading and scoring across workers
=======================================================================

scikit-learn's grid searches and cross-validation parallelise through joblib, and
joblib has a dask backend, so a ``GridSearchCV`` of :class:`DeepSurvRegressor` runs on a
dask cluster inside ``parallel_config(backend="dask")`` with nothing fracsurv-specific.
Image steps go to the workers with :func:`fracsurv.dist.transform`, which sends
partitions of the frame and returns the results in input order.

A ``LocalCluster`` stands in for a real one; with a real cluster, pass its
scheduler address to ``Client`` and give the loader a ``cache_dir`` all workers see.
Needs the ``dist`` extra. About half a minute on 2 CPU cores.
"""

import tempfile
import time

import numpy as np
from distributed import Client, LocalCluster
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV, KFold
from sksurv.column import encode_categorical
from sksurv.datasets import load_whas500

from fracsurv import dist
from fracsurv.datasets import make_spine_cohort
from fracsurv.io import DicomLoader
from fracsurv.survival import DeepSurvRegressor

# Two workers in threads of this process, so the script runs as is (worker processes
# would re-import it); a real cluster's workers are processes on other machines.
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=None, silence_logs=40)
client = Client(cluster)
print(f"cluster: {len(client.scheduler_info()['workers'])} workers")

# %%
# Grid search through joblib's dask backend
# -----------------------------------------
# The same search locally and on the cluster: the same scores (each fold is
# seeded), computed on the workers.

X, y = load_whas500()
X = encode_categorical(X).astype(float)
search = GridSearchCV(
    DeepSurvRegressor(optimizer="lbfgs", lr=1.0, max_epochs=5, batch_norm=False,
                      dropout=0.0, random_state=0),
    {"hidden_units": [(8,), (16,)], "weight_decay": [0.1, 1.0]},
    cv=KFold(3, shuffle=True, random_state=0), n_jobs=2)
local = search.fit(X, y).cv_results_["mean_test_score"]
with parallel_config(backend="dask"):
    on_dask = search.fit(X, y).cv_results_["mean_test_score"]
print("mean C per candidate, local:", np.round(local, 4))
print("mean C per candidate, dask: ", np.round(on_dask, 4))
print("best:", search.best_params_)

# %%
# Loading radiographs on the workers
# ----------------------------------
# 40 simulated DICOM files; the workers write the preprocessed images into the
# shared cache and hand back references, in the order of the frame.

with tempfile.TemporaryDirectory() as tmp:
    cohort = make_spine_cohort(40, image_shape=(256, 128), random_state=0, out_dir=tmp)
    loader = DicomLoader(output_shape=(256, 128), cache_dir=f"{tmp}/cache").fit(cohort.frame)
    t0 = time.perf_counter()
    remote = dist.transform(loader, cohort.frame, client, partition_size=10)
    t_remote = time.perf_counter() - t0
    local_frame = loader.transform(cohort.frame)  # now served from the cache
    same = list(remote["image"]) == list(local_frame["image"])
    print(f"{len(remote)} images loaded on the cluster in {t_remote:.1f} s; "
          f"identical to the local run: {same}")
    print(remote[["patient_id", "modality", "rows", "cols"]].head())

client.close()
cluster.close()
