"""Survival core: the exact Cox loss and the neural Cox models."""

from fracsurv.survival.callbacks import ValidCIndex
from fracsurv.survival.deepsurv import DeepSurvRegressor
from fracsurv.survival.fusion import FusionSurvival
from fracsurv.survival.loss import CoxLoss, cox_nll, fit_ridge_cox, ridge_penalty

__all__ = ["CoxLoss", "DeepSurvRegressor", "FusionSurvival", "ValidCIndex", "cox_nll",
           "fit_ridge_cox", "ridge_penalty"]
