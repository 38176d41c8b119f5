"""Suites whose items are records as the data readers write them: GSM8K, HumanEval, MBPP, JSONL, the pool.

GSM8K (openai/grade-school-math ``test.jsonl``), HumanEval (openai/human-eval ``HumanEval.jsonl.gz``) and MBPP
(google-research/mbpp ``mbpp.jsonl``) go through the same readers as training sources (``data.readers``), so a
suite item and a training row of the same file are the same record; their abilities are DMT's (math_en, code).
"""
from __future__ import annotations

from pathlib import Path

from doitray.eval.benchmarks.common import PASS_SPLIT, BenchmarkError, quarantine_rows, stratified_subset
from doitray.eval.suites import Suite, doit_suites


def _read(spec, fmt: str, ability: str | None, holds: str) -> tuple[list[dict], list[dict]]:
    from doitray.data.readers import READERS
    from doitray.data.sources import SourceSpec
    from doitray.records import Quarantine

    if not Path(spec.path).exists():
        raise BenchmarkError(f"{spec.kind}: {spec.path} does not exist — give {holds}")
    q = Quarantine()
    src = SourceSpec(name=spec.kind, format=fmt, path=spec.path, ability=ability, split=spec.split)
    recs = list(READERS[fmt](src, q))
    if not recs and not len(q):
        raise BenchmarkError(f"{spec.kind}: no rows in {spec.path} — give {holds}")
    for r in recs:
        r["split"] = PASS_SPLIT
    return recs, quarantine_rows(q)


def _suite(spec, recs: list[dict], rejected: list[dict], **kw) -> Suite:
    if spec.abilities:
        recs = [r for r in recs if r["ability"] in spec.abilities]
    return Suite(spec.suite_name, PASS_SPLIT, recs, kind=spec.kind, rejected=rejected, **kw)


def gsm8k(spec) -> Suite:
    """GSM8K JSONL (``question``, ``answer`` ending in ``#### n``), metric ``gsm8k``."""
    recs, rej = _read(spec, "gsm8k", "math_en", "GSM8K's test.jsonl (question, answer with '#### n')")
    return _suite(spec, recs, rej)


def humaneval(spec) -> Suite:
    """HumanEval JSONL(.gz), pass@1 in the sandbox (metric ``code_exec``)."""
    recs, rej = _read(spec, "humaneval", "code", "HumanEval.jsonl(.gz) (task_id, prompt, canonical_solution, test, "
                                                 "entry_point)")
    return _suite(spec, recs, rej)


def mbpp(spec) -> Suite:
    """MBPP JSONL (``task_id, text, code, test_list``), pass@1 in the sandbox."""
    recs, rej = _read(spec, "mbpp", "code", "mbpp.jsonl (task_id, text, code, test_list)")
    return _suite(spec, recs, rej)


def jsonl(spec) -> Suite:
    """Canonical records, one JSON object per line (their own abilities and metrics)."""
    import json

    from doitray.records import validate_record

    p = Path(spec.path)
    if not p.is_file():
        raise BenchmarkError(f"jsonl: {p} is not a file — give a JSON-lines file of records")
    recs, rejected = [], []
    with open(p, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                rejected.append({"file": p.name, "line": line, "reason": f"wrong type: invalid JSON ({e.msg})"})
                continue
            why = validate_record(rec, known_abilities=[rec.get("ability")]) if isinstance(rec, dict) else [
                "wrong type: row must be a JSON object"]
            if why:
                rejected.append({"file": p.name, "line": line, "reason": "; ".join(why)})
                continue
            if spec.split is None or rec["split"] == spec.split:
                recs.append({**rec, "split": PASS_SPLIT})
    return _suite(spec, recs, rejected)


def pool_suites(pool, split: str, abilities: list[str] | None, spec, *, max_tokens: int | None = None) -> list[Suite]:
    """The pool's ``split``: DoIT in-domain (``spec.suite_name``) and, when present and ``spec.ood`` is not False,
    its out-of-domain files (``<name>_ood``). ``limit_per_ability``: the first N items by id of each ability;
    ``limit``: a seeded subset stratified over abilities."""
    from doitray.data.sources import load_records

    wanted = spec.abilities or abilities
    recs = load_records(pool, split=split)
    if spec.limit_per_ability:
        by: dict[str, list[dict]] = {}
        for r in sorted(recs, key=lambda r: r["id"]):
            by.setdefault(r["ability"], []).append(r)
        recs = [r for rs in by.values() for r in rs[: spec.limit_per_ability]]
    suites = doit_suites(recs, split, abilities=wanted, ood=spec.ood is not False)
    for s in suites:
        s.kind = "pool"
        if s.name == "doit":
            s.name = spec.suite_name
        elif spec.name:
            s.name = f"{spec.name}_ood"
        s.records = stratified_subset(s.records, spec.limit, s.group_of, f"{s.name}/{split}")
        s.max_tokens = s.max_tokens or max_tokens
    return suites
