"""fracsurv.report."""
