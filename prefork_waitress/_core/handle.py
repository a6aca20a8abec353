"""MasterHandle: the small typed surface of the master that integrations and programs use."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol

from ..options import Settings
from .commands import Callback, Replies
from .loop import Timer


class MasterHandle(Protocol):
    """What an integration may do with the master (``Master`` implements it)."""

    settings: Settings

    @property
    def ports(self) -> List[int]: ...

    @property
    def state(self) -> str: ...

    def status(self) -> Dict[str, Any]: ...

    def reload(self) -> None: ...

    def scale(self, n: int) -> None: ...

    def stop(self, graceful: bool = True) -> None: ...

    def command(self, name: str, *args: Any, worker: Optional[int] = None, timeout: float = 5.0) -> Replies: ...

    def command_async(
        self, name: str, *args: Any, worker: Optional[int] = None, timeout: float = 5.0, callback: Callback
    ) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    def add_io_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None: ...

    def remove_io_handler(self, fileobj: Any) -> None: ...

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None: ...

    def add_listener(self, listener: Any) -> None: ...

    def own(self, obj: Any) -> None: ...
