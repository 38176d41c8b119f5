"""``doitray eval check SUITE`` and ``doitray eval run HF_DIR SUITE…``."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from doitray.console import CommandError, add_json_flag, emit, table
from doitray.eval.benchmarks.spec import SUITE_KINDS

FORMATS = ("doit", "gsm8k", "humaneval", "mbpp", "cmmlu", "agieval", "c3", "jsonl", "parquet", "synthetic")


def guess_format(path: str) -> str:
    """The reader format for a suite path (override with ``--format``)."""
    name = Path(path).name.lower()
    if path == "synthetic":
        return "synthetic"
    for f in ("humaneval", "gsm8k", "mbpp", "cmmlu", "agieval"):
        if f in str(path).lower():
            return f
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".jsonl"):
        return "jsonl"
    return "doit"


def load_suite_records(path: str, fmt: str | None, split: str | None, abilities: list[str] | None) -> tuple[list[dict], int]:
    """Records of the suite at ``path`` through the data readers: (records, rejected rows)."""
    from doitray.data.sources import SourceSpec, read_sources

    fmt = fmt or guess_format(path)
    if fmt != "synthetic" and not os.path.exists(path):
        raise CommandError(f"suite path {path!r} does not exist")
    spec = SourceSpec(name=Path(path).stem or "suite", format=fmt, path=None if fmt == "synthetic" else path)
    with tempfile.TemporaryDirectory() as cache:
        try:
            recs, q = read_sources([spec], cache)
        except (OSError, ValueError) as e:
            raise CommandError(f"cannot read suite {path!r} as {fmt}: {e}") from e
    if split:
        recs = [r for r in recs if r["split"] == split]
    if abilities:
        recs = [r for r in recs if r["ability"] in abilities]
    return recs, len(q)


def _suites(args) -> list:
    from doitray.eval.suites import from_records

    out = []
    for path in args.suite:
        recs, rejected = load_suite_records(path, args.format, args.split, args.ability)
        if args.limit:
            recs = recs[: args.limit]
        if not recs:
            raise CommandError(f"suite {path!r} has no records" + (f" in split {args.split!r}" if args.split else "")
                               + (f" ({rejected} rows rejected by the reader)" if rejected else ""))
        out.append(from_records(Path(path).stem or "suite", recs, args.split))
    return out


def _kind_suites(args) -> list:
    """``--kind``: the suites a study entry of that kind would evaluate (``pool``: SUITE is a study file)."""
    from doitray.eval.benchmarks import BenchmarkError, SuiteSpec, build_suites, check_entry_suites

    try:
        if args.kind != "pool":
            return check_entry_suites(args.kind, args.suite, shots=args.shots, split=args.split,
                                      abilities=args.ability, limit=args.limit or None)
        from doitray.cli.job import load_spec
        from doitray.study.plan import _plan_cache
        from doitray.study.prepare import study_pool

        out = []
        for path in args.suite:
            spec = load_spec(path)
            entry = next((s for s in spec.evaluation.suites if s.kind == "pool"), SuiteSpec())
            pool = study_pool(spec, _plan_cache(spec))
            for split in [args.split] if args.split else ["valid", "test"]:
                out += build_suites([entry], split, pool=pool, abilities=args.ability or spec.abilities
                                    or pool.abilities(split="train"), max_tokens=spec.evaluation.max_new_tokens)
        return out
    except (BenchmarkError, ValueError, OSError) as e:
        from pydantic import ValidationError

        why = e.errors()[0]["msg"].removeprefix("Value error, ") if isinstance(e, ValidationError) else str(e)
        raise CommandError(why if isinstance(e, BenchmarkError) else f"--kind {args.kind}: {why} — fix the option")


def cmd_check(args) -> int:
    from doitray.eval.check import check_suites, format_report

    suites = _kind_suites(args) if args.kind else _suites(args)
    report = check_suites(suites, workers=args.workers, allow_unsafe_code=args.allow_unsafe_code)
    emit(args, report, format_report)
    return 0 if report["ok"] else 1


def cmd_run(args) -> int:
    import ray

    from doitray.eval.evaluate import evaluate_checkpoint

    if not os.path.isdir(args.hf_dir):
        raise CommandError(f"checkpoint directory {args.hf_dir!r} does not exist")
    suites = _suites(args)
    opts = {"max_model_len": args.max_model_len} if args.max_model_len else {}
    started = False
    if not ray.is_initialized():
        from doitray.cli.job import check_ray_address

        check_ray_address(args.address, "--address")
        ray.init(address=args.address, num_cpus=args.num_cpus if args.address == "local" else None,
                 include_dashboard=False, log_to_driver=False)
        started = True
    try:
        res = evaluate_checkpoint(args.hf_dir, suites, template=args.template, cell_id=args.cell_id,
                                  checkpoint=args.checkpoint or Path(args.hf_dir).name,
                                  engine_options=opts, seed=args.seed)
    finally:
        if started:
            ray.shutdown()
    if args.out:
        import pandas as pd

        os.makedirs(args.out, exist_ok=True)
        pd.DataFrame(res.predictions).to_parquet(os.path.join(args.out, "predictions.parquet"))
        if not res.failures:  # a failed evaluation stores no scores
            pd.DataFrame(res.scores).to_parquet(os.path.join(args.out, "scores.parquet"))
    if res.failures:
        from doitray.eval.evaluate import EvaluationFailed

        raise CommandError(f"{EvaluationFailed(res.failures)} — see the predictions' error column"
                           f"{' in ' + args.out if args.out else ''}; fix the engine or the suite and run again")
    cols = ["suite", "split", "ability", "metric", "value", "n", "chance", "ci_low", "ci_high"]
    failed = sum(1 for p in res.predictions if p["error"])
    emit(args, {"scores": res.scores, "failed_items": failed},
         lambda p: table(p["scores"], cols) + (f"\n{failed} item(s) failed (see predictions.error)" if failed else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate checkpoints; check suites")
    esub = p.add_subparsers(dest="eval_command", required=True, metavar="EVAL_COMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--format", choices=FORMATS, help="reader format (guessed from the path otherwise)")
        q.add_argument("--split", choices=("train", "valid", "test"), help="only this split")
        q.add_argument("--ability", action="append", help="only this ability (repeatable)")
        q.add_argument("--limit", type=int, default=0, help="only the first N items of each suite")
        add_json_flag(q)

    c = esub.add_parser("check", help="score a suite's reference answers; anything below 100%% is listed")
    c.add_argument("suite", nargs="+", help="suite path (DoIT dir/file, GSM8K/HumanEval/MBPP JSONL, …) or 'synthetic'")
    c.add_argument("--workers", type=int, default=2, help="sandbox processes at once (code items)")
    c.add_argument("--kind", choices=SUITE_KINDS, help="read SUITE as a study's suite entry of this kind "
                   "(cmmlu, ceval, agieval, …: the benchmark's folder; pool: a study file, its pool's test split)")
    c.add_argument("--shots", type=int, default=None, help="with --kind cmmlu/ceval/agieval: k-shot prompts")
    c.add_argument("--allow-unsafe-code", action="store_true",
                   help="run code items even where the sandbox cannot isolate them (as DOITRAY_ALLOW_UNSAFE_CODE=1)")
    common(c)
    c.set_defaults(func=cmd_check)

    r = esub.add_parser("run", help="serve a checkpoint (Ray Serve + vLLM) and score it on suites")
    r.add_argument("hf_dir", help="HF export directory (config, safetensors, tokenizer)")
    r.add_argument("suite", nargs="+")
    r.add_argument("--template", default="doit", choices=("doit", "fastchat", "hf"))
    r.add_argument("--cell-id", default="adhoc")
    r.add_argument("--checkpoint", default=None)
    r.add_argument("--max-model-len", type=int, default=None,
                   help="longest prompt + reply (default and cap: the checkpoint's max_position_embeddings)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default=None, help="folder to write predictions.parquet and scores.parquet to")
    r.add_argument("--address", default="local", help="Ray address ('local' starts a private cluster)")
    r.add_argument("--num-cpus", type=int, default=4)
    common(r)
    r.set_defaults(func=cmd_run)
