"""_policies layer."""
