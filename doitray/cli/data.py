"""`doitray data inspect SOURCE` and `doitray data sample SOURCE --recipe … --seed … --out DIR`."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from doitray.console import CommandError, add_json_flag, emit, table

RECIPE_HELP = ("a recipe: balanced:N (curated, N split evenly), synthetic:N, mix:N (any construction), "
               "per_ability:N, reconstruct[:TOTAL], maximum, frac:F, loo:ABILITY:N, "
               "or a JSON file / JSON text of a Recipe")


def default_cache_dir() -> str:
    return os.environ.get("DOITRAY_CACHE_DIR", str(Path.home() / ".cache" / "doitray"))


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect data sources and sample mixtures")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    ins = dsub.add_parser("inspect", help="counts by ability / split / construction and the quarantine summary")
    _source_args(ins)
    ins.add_argument("--show-rejected", type=int, default=10, metavar="N", help="list the first N rejected rows")
    add_json_flag(ins)
    ins.set_defaults(func=_inspect)

    sm = dsub.add_parser("sample", help="sample a recipe's mixture (stratified, seeded, nested) to Parquet")
    _source_args(sm)
    sm.add_argument("--recipe", required=True, help=RECIPE_HELP)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True, help="output folder (records Parquet + mixture.json)")
    add_json_flag(sm)
    sm.set_defaults(func=_sample)


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a data path, or 'synthetic' for the generated ten-ability suite")
    p.add_argument("--format", help="source format (default: detected from the path)")
    p.add_argument("--ability", help="ability of every row (formats without one)")
    p.add_argument("--construction", choices=("curated", "synthetic"), default="curated")
    p.add_argument("--seed-suite", type=int, default=0, help="seed of the generated suite (SOURCE=synthetic)")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: $DOITRAY_CACHE_DIR or ~/.cache/doitray)")
    p.add_argument("--strict", action="store_true", help="fail on any rejected row")


def detect_format(path: Path) -> str:
    """The format of a local path, from its layout and name."""
    name = path.name.lower()
    if path.is_dir():
        if any((path / d).is_dir() for d in ("curated", "synthetic", "train", "valid", "test")) and \
                not list(path.rglob("*.csv")):
            return "doit"
        if list(path.rglob("*.csv")):
            return "cmmlu"
    elif "humaneval" in name:
        return "humaneval"
    elif "gsm8k" in str(path).lower():
        return "gsm8k"
    elif "mbpp" in name:
        return "mbpp"
    elif name.endswith(".parquet"):
        return "parquet"
    elif name.endswith(".json"):
        return "doit"
    raise CommandError(f"cannot detect the format of {path}; pass --format (one of the source formats)")


def _load(args):
    from doitray.data.sources import FORMATS, SourceSpec, load_pool
    from doitray.records import RejectedRowsError

    cache = args.cache_dir or default_cache_dir()
    try:
        if args.source == "synthetic":
            spec = SourceSpec(name="synthetic", format="synthetic", options={"seed": args.seed_suite})
        else:
            path = Path(args.source)
            if not path.exists():
                raise CommandError(f"source {path} does not exist")
            fmt = args.format or detect_format(path)
            if fmt not in FORMATS:
                raise CommandError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
            spec = SourceSpec(name=path.stem.split(".")[0] or "source", format=fmt, path=str(path),
                              ability=args.ability, construction=args.construction)
        return load_pool([spec], cache, strict=args.strict), cache
    except RejectedRowsError as e:
        raise CommandError(str(e)) from None
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(str(e)) from None


def _inspect(args) -> int:
    from doitray.data.sources import read_quarantine

    pool, _ = _load(args)
    rows: dict[str, dict] = {}
    for k, v in pool.counts.items():
        split, ability, cons = k.split("/")
        col = split if cons == "curated" else f"{split}({cons})"
        rows.setdefault(ability, {"ability": ability})[col] = v
    order = pool.abilities()
    cols = ["ability"] + sorted({c for r in rows.values() for c in r if c != "ability"},
                                key=lambda c: (["train", "valid", "test"].index(c.split("(")[0]), c))
    rejected = read_quarantine(pool)[: max(args.show_rejected, 0)]
    payload = {"pool": pool.key, "path": pool.path, "n_records": pool.n_records, "counts": pool.counts,
               "by_ability": [rows[a] for a in order], "n_rejected": pool.n_rejected,
               "quarantine": pool.quarantine_counts,
               "rejected": [{k: r[k] for k in ("source", "file", "line", "reason")} for r in rejected]}

    def text(p):
        out = [table([{c: r.get(c) for c in cols} for r in p["by_ability"]], cols),
               f"\n{p['n_records']} records, {p['n_rejected']} rejected"]
        if p["quarantine"]:
            out.append("rejections by reason: " + ", ".join(f"{k}: {v}" for k, v in p["quarantine"].items()))
            out += [f"  {r['file']}:{r['line']}: {r['reason']}" for r in p["rejected"]]
        return "\n".join(out)

    emit(args, payload, text)
    return 0


def parse_recipe(spec: str):
    """A Recipe from the command-line shorthand, a JSON file, or JSON text."""
    from doitray.data.recipes import Recipe

    try:
        if spec.lstrip().startswith("{"):
            return Recipe.model_validate_json(spec)
        if spec.endswith(".json") and Path(spec).is_file():
            return Recipe.model_validate_json(Path(spec).read_text())
        kind, _, rest = spec.partition(":")
        args = rest.split(":") if rest else []
        if kind in ("balanced", "synthetic", "mix") and len(args) == 1:
            cons = {"balanced": "curated", "synthetic": "synthetic", "mix": None}[kind]
            return Recipe.balanced(int(args[0]), construction=cons)
        if kind == "per_ability" and len(args) == 1:
            return Recipe.per_ability_count(int(args[0]))
        if kind == "reconstruct":
            return Recipe.doit_reconstruct(total=int(args[0])) if args else Recipe.doit_reconstruct()
        if kind == "maximum" and not args:
            return Recipe.doit_maximum()
        if kind == "frac" and len(args) == 1:
            return Recipe.fractions(float(args[0]))
        if kind == "loo" and len(args) == 2:
            return Recipe.leave_one_out(args[0], int(args[1]))
    except ValueError as e:
        raise CommandError(f"--recipe {spec!r}: {e}") from None
    raise CommandError(f"--recipe {spec!r} not understood; expected {RECIPE_HELP}")


def _sample(args) -> int:
    import ray

    from doitray.data.sampling import sample_mixture

    recipe = parse_recipe(args.recipe)
    pool, cache = _load(args)
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            from doitray.cli.job import check_ray_address

            check_ray_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
            ray.init(log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=min(4, os.cpu_count() or 1), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        started = True
    try:
        import ray.data
        ray.data.DataContext.get_current().enable_progress_bars = False
        mix = sample_mixture(pool, recipe, args.seed, cache)
    except ValueError as e:
        raise CommandError(str(e)) from None
    finally:
        if started:
            ray.shutdown()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(mix.path) / "part-00000.parquet", out / "records.parquet")
    shutil.copyfile(Path(mix.path).parent / "mixture.json", out / "mixture.json")
    payload = {"mixture": mix.key, "n": mix.n, "counts": mix.counts, "seed": mix.seed, "pool": pool.key,
               "recipe": json.loads(recipe.model_dump_json()), "n_upsampled": mix.n_upsampled,
               "out": str(out / "records.parquet")}
    emit(args, payload, lambda p: table([{"ability": a, "rows": n} for a, n in p["counts"].items()]) +
         f"\n{p['n']} rows (seed {p['seed']}) -> {p['out']}")
    return 0
