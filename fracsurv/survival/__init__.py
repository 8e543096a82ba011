"""Survival core: the exact Cox loss and the neural Cox models."""

from fracsurv.survival.deepsurv import DeepSurvRegressor
from fracsurv.survival.fusion import FusionSurvival
from fracsurv.survival.loss import CoxLoss, cox_nll, fit_ridge_cox

__all__ = ["CoxLoss", "DeepSurvRegressor", "FusionSurvival", "cox_nll", "fit_ridge_cox"]
