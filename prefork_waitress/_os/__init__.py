"""_os layer."""
