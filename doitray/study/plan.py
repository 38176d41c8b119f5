"""`doitray study plan`: the cells, the examples and tokens each trains on, the estimated compute —
and the checks that need the data or the memory planner, run before anything trains.

Token counts come from the pool: mean tokens per example per ability, measured on up to 200 examples
per ability with the study's tokenizer when it exists already, else estimated at 3 characters per
token (marked ``estimated``). Compute = 6 × parameters × tokens × epochs; GPU-hours assume an A100
at 312 TFLOP/s bf16 and 40% MFU.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from doitray.models.params import model_params
from doitray.study.cells import expand_cells
from doitray.study.prepare import cache_dir, stage_quotas, study_pool
from doitray.study.spec import StudySpec, memory_fit, missing_paths, tier_settings, training_settings

A100_BF16_FLOPS = 312e12
ASSUMED_MFU = 0.40


@dataclass
class CellPlan:
    cell_id: str
    label: str
    tier: str
    params: int | None
    stages: list[dict]
    examples: int
    tokens: int
    flops: float
    gpu_hours: float
    fits: bool | None = None
    min_gpus: int | None = None
    engine: str = ""  # how its checkpoints are served: "gpu", "gpu tp=4", "cpu"


@dataclass
class StudyPlan:
    study: str
    storage: str
    cells: list[CellPlan]
    token_source: str
    problems: list[str] = field(default_factory=list)
    suites: list[dict] = field(default_factory=list)  # every evaluation suite (study.plan_suites)
    pretraining: list[dict] = field(default_factory=list)  # the bases pretrained once per study (study.pretrain)

    @property
    def total_gpu_hours(self) -> float:
        return sum(c.gpu_hours for c in self.cells)

    def to_dict(self) -> dict:
        return {"study": self.study, "storage": self.storage, "n_cells": len(self.cells),
                "token_source": self.token_source, "total_gpu_hours": self.total_gpu_hours,
                "total_tokens": sum(c.tokens for c in self.cells), "problems": self.problems,
                "cells": [asdict(c) for c in self.cells], "suites": self.suites, "pretraining": self.pretraining}

    def text(self) -> str:
        from doitray.console import table

        rows = [{"cell": c.cell_id, "levels": c.label, "params": _si(c.params),
                 "examples by stage": " · ".join(f"{s['stage']} {s['examples']}" for s in c.stages),
                 "examples": c.examples, "tokens": _si(c.tokens), "PFLOP": c.flops / 1e15,
                 "GPU-h": c.gpu_hours, "fits": "" if c.fits is None else ("yes" if c.fits else "NO"),
                "engine": c.engine}
                for c in self.cells]
        head = (f"study {self.study}: {len(self.cells)} cells, {_si(sum(c.tokens for c in self.cells))} training "
                f"tokens ({self.token_source}), ~{self.total_gpu_hours:.1f} GPU-hours "
                f"(A100 bf16 at {ASSUMED_MFU:.0%} MFU); results under {self.storage}")
        out = head + "\n" + table(rows)
        if self.pretraining:
            out += ("\nbases pretrained once per study on the generated corpus (reused from the study's cache when "
                    "trained before):\n" + table([{**p, "tokens": _si(p["tokens"]), "params": _si(p["params"])}
                                                  for p in self.pretraining]))
        if self.suites:
            from doitray.study.plan_suites import suites_text

            out += "\n" + suites_text(self.suites)
        if self.problems:
            out += "\nproblems:\n" + "\n".join(f"  {p}" for p in self.problems)
        return out


def _engine(cell) -> str:
    from doitray.study.cell import cell_engine

    e = cell_engine(cell.to_config())
    tp = int(e.get("tensor_parallel_size", 1))
    return ("gpu" if e["gpu"] else "cpu") + (f" tp={tp}" if tp > 1 else "")


def _si(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def _tokens_per_example(spec: StudySpec, pool) -> tuple[dict[str, float], str]:
    from doitray.data.sources import load_records

    recs = load_records(pool, split="train")
    by_ab: dict[str, list[dict]] = {}
    for r in recs:
        lst = by_ab.setdefault(r["ability"], [])
        if len(lst) < 200:
            lst.append(r)
    tok = None
    if spec.tokenizer.path and os.path.isdir(spec.tokenizer.path):
        from doitray.data.templates import get_template
        from doitray.data.tokenizer import load_tokenizer

        tmpl = get_template(spec.template)
        tok = load_tokenizer(spec.tokenizer.path, tmpl)
    out = {}
    for ab, rs in by_ab.items():
        if tok is not None:
            lens = [len(tmpl.encode(tok, r["messages"]).input_ids) for r in rs]
        else:
            lens = [sum(len(m["content"]) for m in r["messages"]) / 3.0 + 2 * len(r["messages"]) for r in rs]
        out[ab] = sum(lens) / max(1, len(lens))
    return out, ("measured" if tok is not None else "estimated")


def _plan_cache(spec: StudySpec) -> str:
    """The pool cache of a plan: the run's (``cache_dir``, found without opening the storage) when it can be
    created, else a node-local folder (a local storage path that is not writable here)."""
    cache = cache_dir(spec)
    try:
        os.makedirs(cache, exist_ok=True)
        return cache
    except OSError:
        return os.path.join(os.path.expanduser("~/.cache/doitray"), spec.name)


def _read_pool(spec: StudySpec, problems: list[str]):
    """The pool, or None with a note in ``problems`` when the sources cannot be read (the grid still prints)."""
    gone = missing_paths(spec, models=False)
    if gone:
        problems.append("data not read, so no token or compute estimates: " + "; ".join(
            f"{f}: {p} does not exist" for f, p in gone) + " — fix the path (or the variable it is built from), "
            "or pass --no-data")
        return None
    try:
        return study_pool(spec, _plan_cache(spec))
    except OSError as e:
        problems.append(f"data not read, so no token or compute estimates: {e} — check the sources, or pass --no-data")
        return None


def plan_study(spec: StudySpec, *, with_data: bool = True) -> StudyPlan:
    """The study's plan; with data, the pool is read (cached) and every cell checked against it.

    The storage is never opened: a plan needs none of it (the pool is cached where the run will look for it
    when that folder is local, else in a node-local one).
    """
    cells = expand_cells(spec)
    pool, per_tok, source, problems = None, {}, "not computed (--no-data)", []
    if with_data:
        pool = _read_pool(spec, problems)
        if pool is None:
            source = "not computed (data not read)"
        else:
            per_tok, source = _tokens_per_example(spec, pool)
    settings = training_settings(spec.training)
    rows = []
    for c in cells:
        params = model_params(c.content["model"])
        stages, n_ex, tokens = [], 0, 0.0
        if pool is not None:
            try:
                for name, q in stage_quotas(c.content, pool):
                    ex = sum(q.values())
                    tk = sum(n * per_tok.get(a, 0.0) for a, n in q.items()) * settings.epochs
                    stages.append({"stage": name, "examples": ex, "per_ability": q})
                    n_ex += ex
                    tokens += tk
            except ValueError as e:
                problems.append(f"cell {c.cell_id} ({c.label()}): {e}")
        flops = 6.0 * (params or 0) * tokens
        fits = min_gpus = None
        tier = spec.resources[c.tier]
        mp = memory_fit(spec.models[c.levels["model"]], tier, tier_settings(settings, tier))
        if mp is not None:
            fits, min_gpus = mp.fits, mp.min_gpus
            if not fits:
                problems.append(f"cell {c.cell_id} ({c.label()}): model does not fit {mp.gpus} GPUs of "
                                f"{mp.gpu_mem_gib:g} GB (needs {min_gpus})")
        rows.append(CellPlan(c.cell_id, c.label(), c.tier, params, stages, n_ex, int(tokens), flops,
                             flops / (A100_BF16_FLOPS * ASSUMED_MFU) / 3600.0, fits, min_gpus, _engine(c)))
    from doitray.study.plan_suites import plan_suites

    suites, suite_problems = plan_suites(spec, pool, with_data=with_data)
    pretraining = []
    for name, level in spec.models.items():
        if level.pretrain is not None:
            params, tokens = model_params(level.model_dump()), level.pretrain.tokens * level.pretrain.epochs
            pretraining.append({"level": name, "preset": level.preset, "params": params, "tokens": tokens,
                                "PFLOP": 6.0 * (params or 0) * tokens / 1e15})
    return StudyPlan(spec.name, spec.storage, rows, source, problems + suite_problems, suites, pretraining)
