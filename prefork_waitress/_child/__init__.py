"""_child layer."""
