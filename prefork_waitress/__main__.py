"""``prefork-waitress`` and ``python -m prefork_waitress``: serve an app, or ``ctl`` a running master."""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``ctl ...`` to the control client, everything else to the server."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "ctl":
        from ._run.ctl import main as ctl_main

        return ctl_main(args[1:])
    from ._run.cli import main as serve_main

    return serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
