"""`doitray study plan|run|status|export`."""
from __future__ import annotations

import argparse
import os

from doitray.console import CommandError, add_json_flag, emit, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="plan, run, watch and export studies")
    ssub = p.add_subparsers(dest="study_command", required=True, metavar="SUBCOMMAND")

    pl = _study_parser(ssub, "plan", "print the cells, the tokens each trains on and the estimated compute")
    pl.add_argument("--no-data", action="store_true", help="skip reading the data (no token/compute estimates)")
    add_json_flag(pl)
    pl.set_defaults(func=_plan)

    rn = _study_parser(ssub, "run", "run or resume a study (same as python experiments/grid.py)")
    rn.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a new local Ray)")
    rn.add_argument("--retry-failed", action="store_true", help="retry cells that exhausted their retries")
    rn.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    add_json_flag(rn)
    rn.set_defaults(func=_run)

    st = ssub.add_parser("status", help="cells done / running / pending / failed, from storage")
    st.add_argument("dir", help="the study's storage path")
    st.add_argument("--cells", action="store_true", help="list every cell")
    add_json_flag(st)
    st.set_defaults(func=_status)

    ex = ssub.add_parser("export", help="export the results tables (CSV for spreadsheets)")
    ex.add_argument("dir", help="the study's storage path")
    ex.add_argument("--csv", action="store_true", help="write CSV files (default: report the table sizes)")
    ex.add_argument("--out", help="output folder for the CSV files (default: DIR/export)")
    add_json_flag(ex)
    ex.set_defaults(func=_export)


def _study_parser(ssub, name: str, help: str) -> argparse.ArgumentParser:
    p = ssub.add_parser(name, help=help)
    p.add_argument("study", help="study YAML file")
    p.add_argument("--storage", help="override the study's storage path")
    return p


def _load(args, unset: list | None = None):
    from doitray.cli.job import load_spec
    from doitray.study.spec import StudyFileError

    try:
        return load_spec(args.study, args.storage, unset=unset)
    except StudyFileError as e:
        raise CommandError(str(e)) from None


def _plan(args) -> int:
    from doitray.study.plan import plan_study
    from doitray.study.spec import unset_error

    unset: list[tuple[str, str]] = []
    spec = _load(args, unset=unset)  # the grid alone needs no paths: an unset variable fails only with data
    if unset and not args.no_data:
        raise CommandError(f"{unset_error(args.study, unset)} (or pass --no-data to see the grid alone)")
    plan = plan_study(spec, with_data=not args.no_data)
    if unset:
        plan.problems.insert(0, str(unset_error(args.study, unset)).removeprefix(f"{args.study}: ")
                             + "; until then the cell ids above hold the unexpanded paths")
    emit(args, plan.to_dict(), lambda _: plan.text())
    return 0


def _run(args) -> int:
    from doitray.cli.job import main_run

    spec = _load(args)
    out = main_run(spec, address=args.address, retry_failed=args.retry_failed, report=not args.no_report,
                   quiet=args.json)
    emit(args, out, lambda o: "\n".join(f"{k}: {v}" for k, v in o.items()))
    return 0 if out["done"] == out["cells"] else 1


def _status(args) -> int:
    from doitray.study.progress import study_status
    from doitray.store import ResultsStore

    if not ResultsStore(args.dir).exists():
        raise CommandError(f"{args.dir}: no study here (no study.json)")
    st = study_status(args.dir)

    def text(_):
        out = st.line()
        if args.cells:
            out += "\n" + table(st.cells, ["cell_id", "state", "attempts", "model", "construction", "composition",
                                            "volume", "strategy", "replay_frac", "seed"])
        failed = [c for c in st.cells if c["state"] == "failed"]
        for c in failed:
            out += f"\nfailed {c['cell_id']}: {(c.get('error') or '').splitlines()[-1:] or ['']}"
        return out

    emit(args, st.to_dict(), text)
    return 0


def _export(args) -> int:
    from doitray.store import TABLES, ResultsStore

    store = ResultsStore(args.dir)
    if not store.exists():
        raise CommandError(f"{args.dir}: no study here (no study.json)")
    out_dir = args.out or os.path.join(store.root, "export")
    written = {}
    for t in TABLES:
        df = store.read(t)
        if args.csv:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, f"{t}.csv")
            df.to_csv(path, index=False)
            written[t] = {"rows": len(df), "path": path}
        else:
            written[t] = {"rows": len(df), "path": store.table_dir(t)}
    emit(args, written, lambda w: table([{"table": k, **v} for k, v in w.items()]))
    return 0
