"""The upstream file for a frontend (public module; the code lives in integrations/upstream.py)."""

from .integrations.upstream import UpstreamWriter, frontend_host, render, write_atomically

__all__ = ["render", "write_atomically", "UpstreamWriter", "frontend_host"]
