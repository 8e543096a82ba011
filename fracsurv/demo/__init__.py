"""``fracsurv demo``: the whole pipeline on the built-in synthetic cohort, ending in a report.

Stages are sized for 2 CPU cores:

1. :mod:`~fracsurv.demo.data` -- cohort, DICOM loading, learned vertebra crops,
   pVF scores, generated futures and risk groups;
2. :mod:`~fracsurv.demo.models` -- survival models and their comparison;
3. :mod:`~fracsurv.demo.sections` -- survival analysis, examples, Grad-CAM and
   generated futures.

They share one :class:`~fracsurv.demo.context.DemoContext`.
"""

from __future__ import annotations

from fracsurv.demo.context import DemoContext
from fracsurv.demo.run import BANNER, STAGES, run_demo

__all__ = ["BANNER", "STAGES", "DemoContext", "run_demo"]
