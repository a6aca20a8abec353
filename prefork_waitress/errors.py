"""The master's own exceptions (exported from the package).

Others a user may meet live with what raises them: ``AppImportError``
(``_os.loading``), ``ReloadError`` (``reloading``), ``ControlError``
(``integrations.control_client``), ``UnknownCommand`` (``worker``),
``ConfigError`` (``_run.config``) and ``IllegalTransition`` (``_core.states``,
a bug in the master, never the user's doing).
"""

from __future__ import annotations

from typing import Dict, Optional


class CommandError(Exception):
    """A worker could not answer a command: unknown, raised, timed out or gone.

    Stands in ``master.command()``'s result for that slot, so one failing
    worker never hides the other workers' replies.
    """

    def __init__(
        self,
        message: str,
        *,
        worker: Optional[int] = None,
        command: Optional[str] = None,
        exc_type: Optional[str] = None,
        traceback: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.worker = worker
        self.command = command
        self.exc_type = exc_type
        self.traceback = traceback

    def as_json(self) -> Dict[str, Optional[str]]:
        """How JSON output (the control socket, ``ctl command``) shows this error."""
        return {"error": self.message, "type": self.exc_type}

    def __repr__(self) -> str:
        return f"CommandError({self.message!r}, worker={self.worker!r}, exc_type={self.exc_type!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CommandError) and (self.message, self.worker, self.exc_type) == (
            other.message,
            other.worker,
            other.exc_type,
        )

    __hash__ = Exception.__hash__


class BootError(RuntimeError):
    """The app could not be started at all: no worker ever became ready."""


class StartError(RuntimeError):
    """The master cannot start: port in use, live pid file, bad environment."""
