"""fracsurv.datasets."""
