"""_run layer."""
