"""The evaluation side of ``study plan``: every suite of a study with its item count, shots and estimated tokens.

Benchmark files are read (not the judge: an MT-Bench judge is neither loaded nor called); the pool suite's
counts need the pool, so without data they are left blank and the row says why. Tokens per evaluated checkpoint
are estimated at 3 characters per token: every item's prompt plus its generation budget (MT-Bench: both
turns); a judged suite also shows its judge's tokens (each turn's grading prompt and the judge's budget).
"""
from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 3.0


def _prompt_chars(rec: dict) -> int:
    msgs = rec["messages"]
    ctx = msgs[:-1] if msgs and msgs[-1]["role"] == "assistant" else msgs
    return sum(len(m["content"]) for m in ctx)


def suite_tokens(suite) -> tuple[int, int]:
    """(model tokens, judge tokens) one checkpoint's evaluation of ``suite`` takes, estimated."""
    from doitray.eval.scorers import SCORERS, item_metric, meta_of

    model = judge = 0.0
    j = suite.judge
    tmpl = max((len(p["prompt_template"]) + len(p["system_prompt"]) for p in (j.prompts or {}).values()),
               default=600) if j else 0
    for r in suite.records:
        sc = SCORERS.get(item_metric(r))
        budget = suite.max_tokens or (sc.max_tokens if sc else 0)
        turns = meta_of(r).get("turns") or [None]
        model += _prompt_chars(r) / CHARS_PER_TOKEN + budget * len(turns)
        if j is not None and sc is not None and sc.kind == "judge":
            q = sum(len(t or "") for t in turns)
            judge += len(turns) * ((tmpl + q) / CHARS_PER_TOKEN + budget + j.max_tokens * j.n)
    return int(model), int(judge)


def plan_suites(spec, pool, *, with_data: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """(one row per suite, problems) for ``spec``'s ``evaluation.suites``; ``pool`` None: the pool was not read;
    ``with_data`` False (``--no-data``): no benchmark file is read either."""
    from doitray.eval.benchmarks import BenchmarkError, as_specs, build_benchmark
    from doitray.eval.benchmarks.records import pool_suites

    rows, problems = [], []
    for i, entry in enumerate(as_specs(spec.evaluation.suites)):
        base = {"suite": entry.suite_name, "kind": entry.kind, "items": None, "shots": entry.shots or 0,
                "tokens": None, "judge_tokens": None, "note": ""}
        if entry.kind == "pool":
            if pool is None:
                rows.append({**base, "note": "counts need the pool: " + ("--no-data" if not with_data
                                                                         else "data not read")})
                continue
            abilities = spec.abilities or pool.abilities(split="train")
            for split in ("valid", "test"):
                for s in pool_suites(pool, split, abilities, entry, max_tokens=spec.evaluation.max_new_tokens):
                    tok, _ = suite_tokens(s)
                    rows.append({**base, "suite": s.name, "items": len(s), "shots": s.shots, "tokens": tok,
                                 "note": f"pool {split} split" + (" (checkpoint selection)" if split == "valid"
                                                                  else "")})
            continue
        if not with_data:
            rows.append({**base, "note": "not read (--no-data)"})
            continue
        try:
            s = build_benchmark(entry)
        except (BenchmarkError, OSError) as e:
            problems.append(f"evaluation.suites[{i}] ({entry.suite_name}): {e}")
            rows.append({**base, "note": "cannot be read: see problems"})
            continue
        tok, jtok = suite_tokens(s)
        note = [f"{len(s.rejected)} row(s) rejected"] if s.rejected else []
        if s.judge is not None:
            note.append(f"judge {s.judge.name} (not loaded by plan)")
        rows.append({**base, "items": len(s), "shots": s.shots, "tokens": tok, "judge_tokens": jtok or None,
                     "note": "; ".join(note)})
        if not len(s):
            problems.append(f"evaluation.suites[{i}] ({entry.suite_name}): no items in {entry.path}")
    return rows, problems


def suites_text(rows: list[dict]) -> str:
    """The plan's suite table (tokens per evaluated checkpoint)."""
    from doitray.console import table

    def si(n):
        if n is None:
            return "?"
        return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else str(n)

    return "evaluation suites (tokens per evaluated checkpoint, estimated at 3 chars/token):\n" + table(
        [{"suite": r["suite"], "kind": r["kind"], "items": "?" if r["items"] is None else r["items"],
          "shots": r["shots"], "tokens": si(r["tokens"]), "judge tokens": "" if r["judge_tokens"] is None
          else si(r["judge_tokens"]), "note": r["note"]} for r in rows])
