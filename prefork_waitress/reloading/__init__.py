"""File watching and dependency-aware reloading of an app's modules.

``FileWatcher`` turns file changes into a readable fd for the master's loop
(inotify on Linux, stat polling elsewhere; never a thread).  ``Project`` knows
the modules an app is made of and what imports what, and ``load()`` reloads
exactly the changed modules and those depending on them, in dependency order.
``NewModules`` tells a worker what it imported since it last looked, so modules
a framework imports after boot are watched too; ``NewDataFiles`` the data files
its framework asks a reloader to watch (Django's templates and translations).
"""

from ._data_files import NewDataFiles
from ._new_modules import NewModules
from ._project import Project, ReloadError, drop_bytecode
from ._watcher import ChangeBatch, FileWatcher

__all__ = ["ChangeBatch", "FileWatcher", "NewDataFiles", "NewModules", "Project", "ReloadError", "drop_bytecode"]
