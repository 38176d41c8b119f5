"""`doitray report STUDY_DIR [--out FILE] [--text] [--json]`."""
from __future__ import annotations

import argparse

from doitray.console import CommandError, add_json_flag, emit


def _run(args: argparse.Namespace) -> int:
    from doitray.report.build import _load, build_report, summary_text

    try:
        an = _load(args.study_dir, smooth_sigma=args.smooth, n_boot=args.n_boot, x=args.x)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    info = None
    if not args.text or args.out:
        info = build_report(args.study_dir, args.out, smooth_sigma=args.smooth, analysis=an)
    summary = summary_text(an)
    payload = {"report": info.to_dict() if info else None, "completion": an.completion,
               "sensitivity": an.sensitivity.to_dict("records") if len(an.sensitivity) else [],
               "forecast": an.forecast.to_dict() if an.forecast else None,
               "predictors": an.predictor_fit.to_dict() if an.predictor_fit else None,
               "k_sweep": an.k_sweep.summary, "summary": summary}

    def text(_):
        lines = [summary] if args.text else []
        if info:
            lines.append(f"report: {info.path} ({len(info.figures)} figures, {info.bytes / 1e6:.1f} MB"
                         + (", PARTIAL" if info.partial else "") + ")")
        return "\n".join(lines)

    emit(args, payload, text)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="build the study's HTML report (and/or a terminal summary)",
                       description="Analyse a study's results store and write one self-contained HTML report.")
    p.add_argument("study_dir", metavar="STUDY_DIR", help="the study's storage path (holds study.json and tables/)")
    p.add_argument("--out", help="HTML file to write (default STUDY_DIR/report.html)")
    p.add_argument("--text", action="store_true", help="print the terminal summary (no HTML unless --out is given)")
    p.add_argument("--smooth", type=float, default=0.0, metavar="SIGMA",
                   help="Gaussian smoothing of the drawn curves (DoIT plots use 0.8); tables stay raw")
    p.add_argument("--x", choices=("volume", "per_ability", "frac"), default=None,
                   help="data axis of the curves (default: the one that varies in the study)")
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples for confidence intervals")
    add_json_flag(p)
    p.set_defaults(func=_run)
