"""scikit-learn's API checks that apply to every public estimator.

The image estimators take DataFrames of image references, which the data-driven
checks of ``parametrize_with_checks`` (random numeric arrays) cannot build; the
checks on construction, parameters, cloning, representation and parameter
validation apply to every one of them.
"""

import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils import estimator_checks as ec
from sklearn.utils._param_validation import InvalidParameterError

import fracsurv
from fracsurv import (
    CropStacker,
    DeepSurvRegressor,
    DicomLoader,
    DiffXGenerator,
    FusionSurvival,
    PVFScorer,
    RiskGrouper,
    SelectColumns,
    VertebraCropper,
)

ESTIMATORS = [DicomLoader(), VertebraCropper(), PVFScorer(), DiffXGenerator(), FusionSurvival(),
              DeepSurvRegressor(), CropStacker(), RiskGrouper(), SelectColumns()]
CHECKS = [ec.check_parameters_default_constructible, ec.check_no_attributes_set_in_init,
          ec.check_get_params_invariance, ec.check_set_params, ec.check_estimator_cloneable,
          ec.check_estimator_repr, ec.check_do_not_raise_errors_in_init_or_set_params,
          ec.check_param_validation]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(estimator, check):
    check(type(estimator).__name__, estimator)


def test_every_exported_estimator_is_checked():
    exported = {name for name in fracsurv.__all__
                if inspect.isclass(getattr(fracsurv, name))
                and issubclass(getattr(fracsurv, name), BaseEstimator)}
    assert exported == {type(e).__name__ for e in ESTIMATORS}


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_parameters_after_the_first_are_keyword_only(estimator):
    params = list(inspect.signature(type(estimator).__init__).parameters.values())[1:]
    kinds = [p.kind for p in params]
    assert kinds[0] is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(k is inspect.Parameter.KEYWORD_ONLY for k in kinds[1:])
    if len(params) > 1:
        with pytest.raises(TypeError):
            type(estimator)(params[0].default, params[1].default)


def test_torch_estimators_share_the_training_constraints():
    shared = fracsurv.nn.base.TorchEstimatorMixin._parameter_constraints
    for cls in (DeepSurvRegressor, PVFScorer, VertebraCropper, FusionSurvival):
        own = cls._parameter_constraints
        assert set(shared) <= set(own)
        unchanged = {k for k in shared if own[k] is shared[k]}
        # FusionSurvival narrows only the optimizer (it trains on mini-batches)
        assert unchanged == set(shared) - ({"optimizer"} if cls is FusionSurvival else set())


def test_bad_value_fails_before_any_data_is_read():
    # DeepSurvRegressor validated nothing before; a bad value now names itself
    import numpy as np

    with pytest.raises(InvalidParameterError, match="'dropout' parameter of DeepSurvRegressor"):
        DeepSurvRegressor(dropout=1.5).fit(np.zeros((4, 2)), None)
    with pytest.raises(InvalidParameterError, match="'optimizer' parameter of FusionSurvival"):
        FusionSurvival(optimizer="lbfgs").fit(None, None)


def test_pvf_scorer_input_is_deprecated_for_image_input():
    import numpy as np

    assert PVFScorer(image_input="crops")._image_input() == "crops"
    with pytest.warns(FutureWarning, match="'input' is deprecated.*'image_input'"):
        assert PVFScorer(input="crops")._image_input(warn=True) == "crops"
    # fit warns before it reads any data
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match="DataFrame"):
        PVFScorer(input="crops").fit(np.zeros((3, 3)))
    # the new name alone does not warn
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        with pytest.raises(TypeError, match="DataFrame"):
            PVFScorer(image_input="crops").fit(np.zeros((3, 3)))


def test_diffx_image_size_is_deprecated_for_input_shape():
    from fracsurv.generative import DIFFX_PRESETS

    assert all("input_shape" in p and "image_size" not in p for p in DIFFX_PRESETS.values())
    assert DiffXGenerator(input_shape=(64, 32))._input_shape() == (64, 32)
    with pytest.warns(FutureWarning, match="'image_size' is deprecated.*'input_shape'"):
        assert DiffXGenerator(image_size=(32, 16))._input_shape(warn=True) == (32, 16)


def test_fusion_clinical_names_deprecate_the_tabular_ones():
    est = FusionSurvival(clinical_columns=["a"], clinical_hidden_units=(4,))
    assert est._clinical_columns_param() == ["a"] and est._hidden_units() == (4,)
    old = FusionSurvival(tabular_columns=["b"], tab_hidden=())
    with pytest.warns(FutureWarning, match="'tabular_columns' is deprecated.*'clinical_columns'"):
        assert old._clinical_columns_param(warn=True) == ["b"]
    with pytest.warns(FutureWarning, match="'tab_hidden' is deprecated.*'clinical_hidden_units'"):
        assert old._hidden_units(warn=True) == ()
    # fit warns (before it reads the data)
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match="DataFrame"):
        FusionSurvival(tab_hidden=(8,)).fit(None, None)
