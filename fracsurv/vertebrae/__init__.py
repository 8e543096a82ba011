"""fracsurv.vertebrae."""
