"""Language-guided generation of future radiographs (the Diff-X study)."""

from fracsurv.generative.diffx import DIFFX_PRESETS, DiffXGenerator
from fracsurv.generative.injection import FeatureInjector, injection_points
from fracsurv.generative.prompts import PromptEncoder, format_prompt

__all__ = ["DIFFX_PRESETS", "DiffXGenerator", "FeatureInjector", "PromptEncoder",
           "format_prompt", "injection_points"]
