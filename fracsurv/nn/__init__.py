"""fracsurv.nn."""
