"""fracsurv.stratify."""
