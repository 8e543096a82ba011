"""fracsurv.scoring."""
