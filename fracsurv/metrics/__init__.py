"""fracsurv.metrics."""
