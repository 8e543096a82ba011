"""DeepSurvRegressor: exactness of the linear case, scikit-learn/scikit-survival integration."""

import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sksurv.column import encode_categorical
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.functions import StepFunction
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import as_concordance_index_ipcw_scorer, as_cumulative_dynamic_auc_scorer
from sksurv.util import Surv

from fracsurv.nn import load_model
from fracsurv.survival import DeepSurvRegressor

FAST = {"hidden_units": (16,), "max_epochs": 15, "batch_size": 64, "random_state": 0}


@pytest.fixture(scope="module")
def whas():
    X, y = load_whas500()
    return encode_categorical(X).astype(float), y


@pytest.fixture(scope="module")
def gbsg():
    X, y = load_gbsg2()
    return encode_categorical(X).astype(float), y


class _GenericTargetAdapter(DeepSurvRegressor):
    """Lets scikit-learn's generic checks (which pass plain regression y) reach our code.

    A plain y becomes a survival target with every row an event and times that
    keep y's order; everything else (validation, fitting, prediction, pickling,
    invariances) is DeepSurvRegressor's own.
    """

    @staticmethod
    def _surv(y):
        if y is not None and getattr(y, "dtype", None) is not None and y.dtype.names is None:
            y = np.asarray(y, dtype=float).ravel()
            y = Surv.from_arrays(np.ones(len(y), bool), y - y.min() + 1.0)
        return y

    def fit(self, X, y):
        return super().fit(X, self._surv(y))

    def score(self, X, y):
        return super().score(X, self._surv(y))


# With survival targets adapted, every generic check applies: no expected failures.
@parametrize_with_checks(
    [_GenericTargetAdapter(hidden_units=(4,), max_epochs=3, batch_size=16, random_state=0)],
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_linear_model_matches_sksurv(whas, ties):
    X, y = whas
    ours = DeepSurvRegressor(hidden_units=(), optimizer="lbfgs", lr=1.0, weight_decay=0.0,
                             ties=ties, max_epochs=5, random_state=0).fit(X, y)
    ref = CoxPHSurvivalAnalysis(ties=ties, tol=1e-12, n_iter=200).fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
    # same risks -> same survival functions
    sf_ours = ours.predict_survival_function(X.iloc[:5], return_array=True)
    sf_ref = ref.predict_survival_function(X.iloc[:5], return_array=True)
    np.testing.assert_allclose(sf_ours, sf_ref, atol=1e-4)


def test_linear_model_matches_lifelines(gbsg):
    from lifelines import CoxPHFitter

    X, y = gbsg
    ours = DeepSurvRegressor(hidden_units=(), optimizer="lbfgs", lr=1.0, weight_decay=0.0,
                             max_epochs=5, random_state=0).fit(X, y)
    df = X.assign(T=y["time"], E=y["cens"].astype(int))
    cph = CoxPHFitter().fit(df, "T", "E")  # Efron ties
    np.testing.assert_allclose(ours.coef_, cph.params_[X.columns].to_numpy(), atol=1e-4)


def test_return_types_match_sksurv(whas):
    X, y = whas
    model = DeepSurvRegressor(**FAST).fit(X, y)
    fns = model.predict_survival_function(X.iloc[:3])
    assert fns.shape == (3,) and all(isinstance(f, StepFunction) for f in fns)
    arr = model.predict_survival_function(X.iloc[:3], return_array=True)
    assert arr.shape == (3, len(model.unique_times_))
    assert np.all(np.diff(arr, axis=1) <= 1e-12) and np.all((arr >= 0) & (arr <= 1))
    chf = model.predict_cumulative_hazard_function(X.iloc[:3], return_array=True)
    np.testing.assert_allclose(np.exp(-chf), arr, rtol=1e-10)
    # higher risk -> lower survival everywhere
    risk = model.predict(X.iloc[:3])
    order = np.argsort(risk)
    assert np.all(arr[order[0]] >= arr[order[-1]] - 1e-12)


def test_learns_on_real_data(gbsg):
    X, y = gbsg
    tr, te = np.arange(0, 500), np.arange(500, len(X))
    model = DeepSurvRegressor(hidden_units=(32,), max_epochs=60, random_state=0)
    model.fit(X.iloc[tr], y[tr])
    assert model.score(X.iloc[te], y[te]) > 0.62  # CoxPH reaches about .68 on GBSG2
    assert len(model.net_.history) <= 60
    # the validation split's C (the fusion model's selection metric) is recorded per epoch
    c = model.net_.history[:, "valid_cindex"]
    assert len(c) == len(model.net_.history) and 0.5 < max(c) < 1.0 and len(set(c)) > 1


def test_reproducible(whas):
    X, y = whas
    a = DeepSurvRegressor(**FAST).fit(X, y).predict(X)
    b = DeepSurvRegressor(**FAST).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


def test_pipeline_gridsearch_and_sksurv_scorers(gbsg):
    X, y = gbsg
    pipe = make_pipeline(StandardScaler(), DeepSurvRegressor(**FAST))
    grid = GridSearchCV(pipe, {"deepsurvregressor__dropout": [0.0, 0.2]},
                        cv=KFold(2, shuffle=True, random_state=0))
    grid.fit(X, y)
    assert set(grid.cv_results_["param_deepsurvregressor__dropout"]) == {0.0, 0.2}
    times = np.percentile(y["time"][y["cens"]], [25, 50, 70])
    for wrapper, kw in [(as_concordance_index_ipcw_scorer, {"tau": times[-1]}),
                        (as_cumulative_dynamic_auc_scorer, {"times": times})]:
        g = GridSearchCV(wrapper(DeepSurvRegressor(**FAST), **kw),
                         {"estimator__weight_decay": [0.0, 1e-3]},
                         cv=KFold(2, shuffle=True, random_state=0))
        g.fit(X, y)
        assert 0.5 < g.best_score_ <= 1.0


def test_cross_validate_clone_and_joblib(whas, tmp_path):
    X, y = whas
    res = cross_validate(DeepSurvRegressor(**FAST), X, y, cv=KFold(3, shuffle=True, random_state=0))
    assert np.all(res["test_score"] > 0.6)
    model = clone(DeepSurvRegressor(**FAST)).fit(X, y)
    joblib.dump(model, tmp_path / "m.joblib")
    again = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_allclose(again.predict(X), model.predict(X))


def test_safe_save_load_roundtrip(whas, tmp_path):
    X, y = whas
    model = DeepSurvRegressor(**FAST).fit(X, y)
    path = model.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)
    np.testing.assert_allclose(loaded.predict_survival_function(X.iloc[:4], return_array=True),
                               model.predict_survival_function(X.iloc[:4], return_array=True))
    assert DeepSurvRegressor.load(path).get_params() == model.get_params()


def test_load_refuses_foreign_classes(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"class": "os.system", "params": {}}))
    with pytest.raises(ValueError, match="refusing"):
        load_model(tmp_path)


def _y(event, time):
    return Surv.from_arrays(np.asarray(event, bool), np.asarray(time, float))


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.arange(4.0), "structured array"),
        (_y([1, 0, 1, 1], [1.0, -2.0, 3.0, 4.0]), "row 1"),
        (_y([1, 0, 1, 1], [1.0, 2.0, np.nan, 4.0]), "row 2"),
        (_y([0, 0, 0, 0], [1.0, 2.0, 3.0, 4.0]), "no events"),
    ],
)
def test_bad_targets(y, match):
    X = np.random.default_rng(0).normal(size=(4, 2))
    with pytest.raises(ValueError, match=match):
        DeepSurvRegressor(**FAST).fit(X, y)


def test_bad_features_name_the_row():
    y = _y([1, 0, 1, 1], [1.0, 2.0, 3.0, 4.0])
    X = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": [1.0, 1.0, 2.0, 2.0]},
                     index=["p1", "p2", "p3", "p4"])
    with pytest.raises(ValueError, match=r"'p3'.*'a'"):
        DeepSurvRegressor(**FAST).fit(X, y)
    X2 = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "sex": ["f", "m", "f", "m"]})
    with pytest.raises(ValueError, match=r"non-numeric.*'sex'"):
        DeepSurvRegressor(**FAST).fit(X2, y)


def test_lbfgs_stops_once_the_loss_has_converged():
    from sksurv.column import encode_categorical
    from sksurv.datasets import load_whas500

    X, y = load_whas500()
    X = encode_categorical(X).astype(float)
    model = DeepSurvRegressor(hidden_units=(16,), optimizer="lbfgs", lr=1.0, weight_decay=1.0,
                              batch_norm=False, dropout=0.0, max_epochs=200,
                              random_state=0).fit(X, y)
    losses = np.asarray(model.net_.history[:, "train_loss"])
    assert len(losses) < 20  # it ran all 200 before
    assert abs(losses[-1] - losses[-2]) <= 1e-7 * abs(losses[-1])
    assert model.score(X, y) > 0.75
