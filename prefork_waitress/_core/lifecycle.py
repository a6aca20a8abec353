"""The master's lifecycle states: one Enum instead of strings retyped in every module.

Inside the package states are compared as members only (an integration that has
``master.state``, a string, compares ``State(master.state)``). A slot's and a
worker's states are in :mod:`.states`.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    """Where the master is in its life; ``Master.state`` returns the ``value`` string."""

    NEW = "new"
    BOOTING = "booting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def serving(self) -> bool:
        """Booting or running: slots are (to be) filled, workers may be forked."""
        return self in (State.BOOTING, State.RUNNING)

    @property
    def ending(self) -> bool:
        """Stopping or stopped: nothing new starts."""
        return self in (State.STOPPING, State.STOPPED)
