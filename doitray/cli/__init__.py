"""`doitray …`: the command line. each area's subcommands are registered by ``doitray.cli.<area>``."""
from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doitray", description="Instruction-tuning scaling studies on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _AREAS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as e:
        print(f"doitray: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("doitray: interrupted", file=sys.stderr)
        return 130


