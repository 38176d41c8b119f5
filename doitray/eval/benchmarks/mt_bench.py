"""MT-Bench as FastChat ships it (lm-sys/FastChat ``fastchat/llm_judge/data``).

- ``mt_bench/question.jsonl``: ``{question_id, category, turns: [q1, q2]}``;
- ``mt_bench/reference_answer/gpt-4.jsonl``: ``{question_id, choices: [{turns: [r1, r2]}]}``, the reference
  answers FastChat's single-answer grading gives the judge for math, reasoning and coding (``NEED_REF_CATS``);
- ``judge_prompts.jsonl``: the grading prompts by name (``single-v1``, ``single-math-v1`` and their
  ``-multi-turn`` forms: ``system_prompt``, ``prompt_template``, ``output_format`` ``[[rating]]``).

Each question is one record (ability ``general``, metric ``judge``); the model answers both turns as FastChat
does (turn 2 sees its own turn-1 answer); the judge rates each turn (``eval.judge.mt_bench_conversations``), as
``gen_judgment.py --mode single`` does.
"""
from __future__ import annotations

from pathlib import Path

from doitray.data.readers.common import iter_json_lines, require
from doitray.eval.benchmarks.common import BenchmarkError, PASS_SPLIT, need_dir, quarantine_rows
from doitray.eval.suites import Suite
from doitray.records import Quarantine, make_record

NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")  # FastChat common.py
PROMPT_NAMES = ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")
NO_REFERENCE = "(no reference answer: rated by the judge)"
HOLDS = "question.jsonl, reference_answer/gpt-4.jsonl and judge_prompts.jsonl, as in FastChat's llm_judge/data"


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def read_judge_prompts(path: Path) -> dict[str, dict]:
    """FastChat's single-answer grading prompts by name (each with ``system_prompt`` and ``prompt_template``)."""
    q = Quarantine()
    prompts = {row["name"]: row for _, row in iter_json_lines(path, "mt_bench", q)
               if isinstance(row, dict) and row.get("name") in PROMPT_NAMES}
    missing = [n for n in PROMPT_NAMES if n not in prompts]
    if missing or len(q):
        raise BenchmarkError(f"mt_bench: {path} lacks the grading prompt(s) {missing or '(unreadable lines)'} — "
                             "give FastChat's judge_prompts.jsonl")
    return prompts


def mt_bench(spec) -> Suite:
    """The MT-Bench suite of ``spec`` (``abilities``: the categories to keep); its judge from ``spec.judge``."""
    from doitray.eval.judge import JudgeConfig

    root = need_dir(spec.path, "mt_bench", holds=HOLDS)
    base = root / "mt_bench" if (root / "mt_bench" / "question.jsonl").is_file() else root
    qfile = _first(base / "question.jsonl")
    pfile = _first(base / "judge_prompts.jsonl", base.parent / "judge_prompts.jsonl")
    if qfile is None or pfile is None:
        raise BenchmarkError(f"mt_bench: no {'question.jsonl' if qfile is None else 'judge_prompts.jsonl'} "
                             f"at {root} — give the folder with {HOLDS}")
    prompts = read_judge_prompts(pfile)
    q = Quarantine()
    refs: dict[int, list[str]] = {}
    rfile = _first(base / "reference_answer" / "gpt-4.jsonl")
    for line, row in (iter_json_lines(rfile, "mt_bench", q) if rfile else []):
        try:
            refs[int(row["question_id"])] = [str(t) for t in row["choices"][0]["turns"]]
        except (KeyError, IndexError, TypeError, ValueError):
            q.add(source="mt_bench", file="reference_answer/gpt-4.jsonl", line=line,
                  reason="missing field: question_id or choices[0].turns", raw=row)
    out = []
    for line, row in iter_json_lines(qfile, "mt_bench", q):
        why = require(row, ("question_id", "category", "turns"))
        if not why and not (isinstance(row["turns"], list) and row["turns"] and all(isinstance(t, str) and t.strip()
                                                                                  for t in row["turns"])):
            why = "wrong type: turns must be a non-empty list of strings"
        ref = refs.get(int(row["question_id"])) if not why else None
        if not why and row["category"] in NEED_REF_CATS and (ref is None or len(ref) < len(row["turns"])):
            why = f"missing field: reference answer of a {row['category']} question (reference_answer/gpt-4.jsonl)"
        if why:
            q.add(source="mt_bench", file=qfile.name, line=line, reason=why, raw=row)
            continue
        if spec.abilities and row["category"] not in spec.abilities:
            continue
        meta = {"metric": "judge", "benchmark": "mt_bench", "question_id": row["question_id"],
                "category": row["category"], "turns": row["turns"], "file": qfile.name, "line": line}
        if row["category"] in NEED_REF_CATS:
            meta["ref_answers"] = ref
        # no gold reply: the judge rates it; ``answer`` shows the reference (or that there is none) in predictions
        out.append(make_record(id=f"mt_bench-{row['question_id']}", ability="general", source="mt_bench",
                               split=PASS_SPLIT, question_format="generate", answer=ref[0] if ref else NO_REFERENCE,
                               messages=[{"role": "user", "content": row["turns"][0]}], meta=meta))
    j = spec.judge
    judge = JudgeConfig(hf_dir=j.path, url=j.url, model=j.model, api_key_env=j.api_key_env, template=j.template,
                        n=j.n, temperature=j.temperature, max_tokens=j.max_tokens, engine_options=dict(j.engine),
                        prompts=prompts)
    return Suite(spec.suite_name, PASS_SPLIT, out, max_tokens=1024, kind="mt_bench", judge=judge,
                 rejected=quarantine_rows(q))

