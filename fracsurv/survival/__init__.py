"""fracsurv.survival."""
