"""fracsurv.generative."""
