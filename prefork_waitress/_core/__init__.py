"""_core layer."""
