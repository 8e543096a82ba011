"""scikit-learn's API checks that apply to the image estimators.

Their inputs are DataFrames of image references, which the data-driven checks of
``parametrize_with_checks`` (random numeric arrays) cannot build; the checks on
construction, parameters, cloning and representation apply to every one of them.
"""

import pytest
from sklearn.utils import estimator_checks as ec

from fracsurv.generative import DiffXGenerator
from fracsurv.io import DicomLoader
from fracsurv.scoring import PVFScorer
from fracsurv.survival import FusionSurvival
from fracsurv.vertebrae import VertebraCropper

ESTIMATORS = [DicomLoader(), VertebraCropper(), PVFScorer(), DiffXGenerator(), FusionSurvival()]
CHECKS = [ec.check_parameters_default_constructible, ec.check_no_attributes_set_in_init,
          ec.check_get_params_invariance, ec.check_set_params, ec.check_estimator_cloneable,
          ec.check_estimator_repr, ec.check_do_not_raise_errors_in_init_or_set_params]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(estimator, check):
    check(type(estimator).__name__, estimator)
