"""Shared command-line conventions: ``--json`` output, clear errors, non-zero exit on failure."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable


class CommandError(Exception):
    """An expected, user-facing failure: printed as one line ``<prog>: error: <what> — <fix>``, exit status 2.

    The traceback is shown only with ``--debug``. Lower layers raise subclasses (``store.StorageError``);
    the commands translate the rest (``doitray.cli.guarded``).
    """


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout and nothing else")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def emit(args: argparse.Namespace, payload: Any, text: Callable[[Any], str] | str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable text."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(_clean(payload), ensure_ascii=False, default=str) + "\n")
    else:
        sys.stdout.write((text(payload) if callable(text) else text).rstrip("\n") + "\n")


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain fixed-width text table."""
    if not rows:
        return "(none)"
    cols = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
