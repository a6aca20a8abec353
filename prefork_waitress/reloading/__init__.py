"""File watching and dependency-aware reloading of an app's modules.

``FileWatcher`` turns file changes into a readable fd for the master's loop
(inotify on Linux, stat polling elsewhere; never a thread).
"""

from ._watcher import FileWatcher

__all__ = ["FileWatcher"]
