"""The one way tracking speaks up: a warning line on stderr (a tracker that is down never fails a cell)."""
from __future__ import annotations

import sys


def warn(message: str) -> None:
    """Print ``doitray: warning: <message>`` to stderr."""
    print(f"doitray: warning: {message}", file=sys.stderr, flush=True)
