"""Benchmark suites from typed suite entries (``SuiteSpec``): one builder per kind, one module per family.

``build_suites(entries, split, pool=…)`` is what a cell, ``doitray eval check --kind`` and ``study plan`` call.
The pool suite is asked on every split the cell evaluates (valid for checkpoint selection, test); a benchmark
suite only on test (``common.PASS_SPLIT``): it reads its own split of the benchmark's files (``entry.split``)
and never takes part in selecting a checkpoint.

Modules: ``spec`` (the entries), ``common`` (file layout errors, multiple-choice items, the seeded stratified
``limit``), ``exams`` (CMMLU, C-Eval, C3, LogiQA 2.0), ``agieval``, ``mt_bench`` (FastChat's files and the judge's
grading conversations), ``records`` (GSM8K, HumanEval, MBPP, JSONL, the pool), ``subjects`` (subject names).
"""
from __future__ import annotations

from typing import Any, Callable

from doitray.eval.benchmarks.common import PASS_SPLIT, BenchmarkError
from doitray.eval.benchmarks.spec import SHOT_KINDS, SUBJECT_KINDS, SUITE_KINDS, JudgeSpec, SuiteSpec, check_suite_list


def _builders() -> dict[str, Callable]:
    from doitray.eval.benchmarks import agieval, exams, mt_bench, records

    return {"cmmlu": exams.cmmlu, "ceval": exams.ceval, "c3": exams.c3, "logiqa": exams.logiqa,
            "agieval": agieval.agieval, "gsm8k": records.gsm8k, "humaneval": records.humaneval,
            "mbpp": records.mbpp, "jsonl": records.jsonl, "mt_bench": mt_bench.mt_bench}


def as_specs(entries: list[Any] | None) -> list[SuiteSpec]:
    """Entries (``SuiteSpec`` or the dicts a cell's content holds) as specs; the pool entry when there are none."""
    specs = [e if isinstance(e, SuiteSpec) else SuiteSpec.model_validate(e) for e in entries or []]
    return specs or [SuiteSpec()]


def build_benchmark(spec: SuiteSpec):
    """The suite of one benchmark entry (not ``pool``), its ``limit`` applied."""
    from doitray.eval.benchmarks.common import stratified_subset

    suite = _builders()[spec.kind](spec)
    suite.records = stratified_subset(suite.records, spec.limit, suite.group_of, suite.name)
    return suite


def build_suites(entries: list[Any] | None, split: str, *, pool=None, abilities: list[str] | None = None,
                 max_tokens: int | None = None) -> list:
    """The suites of ``entries`` the cell asks on ``split``: the pool's (needs ``pool``) on every split, the
    benchmarks' on test. ``abilities``: the cell's abilities (the pool suite's default); ``max_tokens``: the
    study's ``evaluation.max_new_tokens`` for pool suites."""
    from doitray.eval.benchmarks.records import pool_suites

    out = []
    for spec in as_specs(entries):
        if spec.kind == "pool":
            if pool is None:
                raise ValueError("the pool suite needs the study's pool")
            out += pool_suites(pool, split, abilities, spec, max_tokens=max_tokens)
        elif split == PASS_SPLIT:
            out.append(build_benchmark(spec))
    return out


def check_entry_suites(kind: str, paths: list[str], *, shots: int | None = None, split: str | None = None,
                       abilities: list[str] | None = None, limit: int | None = None) -> list:
    """The suite of each benchmark folder in ``paths`` as a study entry of ``kind`` builds it (``eval check
    --kind``); the pool kind needs a study, so the command builds that one itself."""
    if kind == "pool":
        raise ValueError("the pool kind reads a study's pool: give the study file")
    # the reference check never asks a judge: an MT-Bench entry gets a placeholder endpoint that is never called
    judge = JudgeSpec(url="http://judge.invalid/v1", model="none") if kind == "mt_bench" else None
    return [build_benchmark(SuiteSpec(kind=kind, path=p, shots=shots, split=split, abilities=abilities,
                                      limit=limit, judge=judge)) for p in paths]


def benchmark_names(study: dict | None) -> dict[str, str]:
    """Suite name -> kind of every benchmark suite a study document (``study.json``) lists (pool excluded)."""
    ev = (study or {}).get("evaluation") or {}
    out = {}
    for e in ev.get("suites") or []:
        try:
            s = e if isinstance(e, SuiteSpec) else SuiteSpec.model_validate(e)
        except ValueError:
            continue
        if s.kind != "pool":
            out[s.suite_name] = s.kind
    return out


__all__ = ["BenchmarkError", "JudgeSpec", "PASS_SPLIT", "SHOT_KINDS", "SUBJECT_KINDS", "SUITE_KINDS", "SuiteSpec",
           "as_specs", "benchmark_names", "build_benchmark", "build_suites", "check_entry_suites", "check_suite_list"]
