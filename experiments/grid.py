"""The main job: run (or resume) a study grid on Ray.

    python experiments/grid.py                                  # the embedded default, local Ray
    python experiments/grid.py --study experiments/studies/doit.yaml
    ray job submit --working-dir . -- python experiments/grid.py --study experiments/studies/dmt.yaml

Re-running the same command on the same storage continues where it stopped. An expected failure (a bad
study file, storage that cannot be reached, no Ray at RAY_ADDRESS) is one line and exit status 2;
--debug adds the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from doitray.cli import DEBUG_HELP, guarded  # noqa: E402
from doitray.cli.job import load_spec, main_run  # noqa: E402

DEFAULT_STUDY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "studies", "default.yaml")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default=DEFAULT_STUDY, help="study YAML (default: the embedded default)")
    ap.add_argument("--storage", help="override the study's storage path (local, s3://, gs://)")
    ap.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a new local Ray)")
    ap.add_argument("--retry-failed", action="store_true", help="retry cells that exhausted their retries")
    ap.add_argument("--no-report", action="store_true", help="skip the HTML report")
    ap.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = ap.parse_args(argv)
    return guarded("grid.py", lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    spec = load_spec(args.study, args.storage)
    out = main_run(spec, address=args.address, retry_failed=args.retry_failed, report=not args.no_report)
    print(f"study {out['study']}: {out['done']}/{out['cells']} cells done, {out['failed']} failed "
          f"({out['wall_s']:.0f}s)")
    print(f"results: {out['tables']}")
    if "report" in out:
        print(f"report:  {out['report']}")
    return 0 if out["done"] == out["cells"] else 1


if __name__ == "__main__":
    sys.exit(main())
