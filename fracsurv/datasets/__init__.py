"""The built-in synthetic lateral-spine cohort (SIMULATED DATA, not for clinical conclusions)."""

from fracsurv.datasets.spine import (
    CLINICAL_COLUMNS,
    FOV_TYPES,
    load_demo_cohort,
    make_spine_cohort,
    read_cohort_csv,
)

__all__ = ["CLINICAL_COLUMNS", "FOV_TYPES", "load_demo_cohort", "make_spine_cohort",
           "read_cohort_csv"]
