"""`doitray …`: the command line. each area's subcommands are registered by ``doitray.cli.<area>``.

Expected failures (a bad study file, an unset variable or a missing path in it, storage that cannot be
reached or written, no Ray cluster at the given address) end in one line, ``doitray: error: <what> —
<fix>``, and exit status 2; ``--debug`` (or ``DOITRAY_DEBUG=1``) prints the traceback as well. Anything
else is a bug and keeps Python's traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Callable

from doitray.console import CommandError

# (module, what it adds) — each module has register(subparsers)
_AREAS = (
    "doitray.cli.data",      # doitray data inspect|sample
    "doitray.cli.models",    # doitray plan
    "doitray.cli.study",     # doitray study plan|run|status|export
    "doitray.cli.cluster",   # doitray cluster validate
    "doitray.cli.eval",      # doitray eval check|run
    "doitray.cli.report",    # doitray report
)
DEBUG_HELP = "on an error, print the full traceback too (also DOITRAY_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doitray", description="Instruction-tuning scaling studies on Ray.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _AREAS:
        importlib.import_module(mod).register(sub)
    _add_debug_to_leaves(parser)
    return parser


def _add_debug_to_leaves(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the subcommand too (``doitray study plan X --debug``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        return
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            _add_debug_to_leaves(child)


def expected_error(e: BaseException) -> CommandError | None:
    """``e`` as the one-line error it stands for, or None when it is not an expected failure (a bug)."""
    if isinstance(e, CommandError):  # a Ray task's error wraps the one raised remotely
        return e.cause if isinstance(getattr(e, "cause", None), CommandError) else e
    spec = sys.modules.get("doitray.study.spec")  # a StudyFileError exists only once its module is loaded
    if spec is not None and isinstance(e, spec.StudyFileError):
        return CommandError(str(e))
    return None


def guarded(prog: str, fn: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run a command: an expected failure prints ``<prog>: error: …`` (and, with ``debug``, the traceback
    first) and returns 2; Ctrl-C returns 130; anything else propagates with its traceback."""
    debug = debug or os.environ.get("DOITRAY_DEBUG", "") not in ("", "0")
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        err = expected_error(e)
        if err is None:
            raise
        if debug:
            traceback.print_exception(e, file=sys.stderr)
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return guarded("doitray", lambda: args.func(args), debug=args.debug)
