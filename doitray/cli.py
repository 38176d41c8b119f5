"""`doitray …`: the command line. Each area registers its own subcommands (``<area>/cli.py``)."""
from __future__ import annotations

import argparse
import importlib
import sys

from doitray.console import CommandError

# (module, what it adds) — each module has register(subparsers)
_AREAS = (
    "doitray.data.cli",      # doitray data inspect|sample
    "doitray.models.cli",    # doitray plan
    "doitray.study.cli",     # doitray study plan|run|status|export, doitray cluster validate
    "doitray.eval.cli",      # doitray eval check|run
    "doitray.report.cli",    # doitray report
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


if __name__ == "__main__":
    sys.exit(main())
