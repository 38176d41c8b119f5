"""AGIEval as published (ruixiangcui/AGIEval): ``data/v1/<set>.jsonl`` and ``data/few_shot_prompts.csv``.

The Chinese multiple-choice sets (AGIEval's ``chinese_qa_datasets``), each question in AGIEval's zero-shot
form (``src/dataset_loader.py::convert_zero_shot``)::

    {passage}问题：{question} 选项：(A)… (B)… (C)… (D)…
    答案：从A到D, 我们应选择

Few-shot (``shots`` ≤ 5): AGIEval's published demonstrations of the set (the ``sample i`` rows of the prompts
file, in order) as earlier chat turns, each in the same form with its label as the assistant reply — AGIEval's
chat mode, except that a demo's reply is the bare letter rather than "答案是 X", so that the answer letter
is the first token of the reply (it is scored by the letters' log-probabilities there). Single-answer items
are scored by ``choice``; every item of jec-qa-kd, jec-qa-ca and gaokao-physics (AGIEval's multi-answer sets)
by ``multi_choice`` (the letter set of the greedy reply). Grouped per set.
"""
from __future__ import annotations

import ast
import csv
from pathlib import Path

from doitray.data.readers.common import iter_json_lines, require
from doitray.eval.benchmarks.common import BenchmarkError, PASS_SPLIT, letters_of, mc_record, need_dir, quarantine_rows
from doitray.eval.suites import Suite
from doitray.records import Quarantine

CHINESE_SETS = ("logiqa-zh", "jec-qa-kd", "jec-qa-ca", "gaokao-chinese", "gaokao-geography", "gaokao-history",
                "gaokao-biology", "gaokao-chemistry", "gaokao-physics", "gaokao-mathqa")
MULTI_SETS = ("jec-qa-kd", "jec-qa-ca", "gaokao-physics")  # AGIEval's multi_choice_datasets
HOLDS = "data/v1/<set>.jsonl and data/few_shot_prompts.csv, as in the AGIEval repository"


def zero_shot_prompt(row: dict) -> str:
    """AGIEval's zero-shot prompt of a Chinese multiple-choice row."""
    passage = row.get("passage") or ""
    n = len(row["options"]) if len(row["options"]) != 1 else 4
    return (passage + "问题：" + row["question"] + " " + "选项：" + " ".join(row["options"]) + "\n"
            + "答案：从A到{}, 我们应选择".format("ABCDEFG"[n - 1]))


def _label(row: dict) -> str:
    lab = row.get("label")
    return "".join(lab) if isinstance(lab, list) else str(lab or "")


def read_demos(path: Path, q: Quarantine) -> dict[str, list[dict]]:
    """Set -> its published demonstrations (the ``sample i`` rows of ``few_shot_prompts.csv``)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, out = rows[0], {}
    for line, row in enumerate(rows[1:], 2):
        if not row or not row[0].startswith("sample"):
            continue  # the "explanation i" rows: chain-of-thought only
        for col, cell in zip(header[1:], row[1:]):
            if not cell:
                continue
            try:
                demo = ast.literal_eval(cell)
            except (ValueError, SyntaxError) as e:
                q.add(source="agieval", file=path.name, line=line, reason=f"wrong type: {col}: not a literal ({e})")
                continue
            out.setdefault(col, []).append(demo)
    return out


def _find(root: Path, *cands: str) -> Path | None:
    return next((root / c for c in cands if (root / c).exists()), None)


def agieval(spec) -> Suite:
    """The AGIEval suite of ``spec`` (sets: ``spec.abilities`` or every Chinese multiple-choice set)."""
    root = need_dir(spec.path, "agieval", holds=HOLDS)
    v1 = _find(root, "data/v1", "v1") or root
    sets = list(spec.abilities or CHINESE_SETS)
    bad = [s for s in sets if s not in CHINESE_SETS]
    if bad:
        raise BenchmarkError(f"agieval: set(s) {bad} are not AGIEval Chinese multiple-choice sets — "
                             f"choose among {', '.join(CHINESE_SETS)}")
    shots = spec.shots or 0
    q = Quarantine()
    demos: dict[str, list[dict]] = {}
    if shots:
        prompts = _find(root, "data/few_shot_prompts.csv", "few_shot_prompts.csv") or _find(
            v1.parent, "few_shot_prompts.csv")
        if prompts is None:
            raise BenchmarkError(f"agieval: {shots}-shot needs few_shot_prompts.csv (AGIEval's data/) under {root}")
        demos = read_demos(prompts, q)
    out, seen = [], 0
    for name in sets:
        path = v1 / f"{name}.jsonl"
        if not path.is_file():
            continue
        seen += 1
        turns: list[dict] = []
        for d in demos.get(name, [])[:shots]:
            turns += [{"role": "user", "content": zero_shot_prompt(d)}, {"role": "assistant", "content": _label(d)}]
        if shots and len(turns) < 2 * shots:
            q.add(source="agieval", file="few_shot_prompts.csv", line=0,
                  reason=f"missing field: {name} has {len(turns) // 2} demonstrations, {shots} asked")
            continue
        for line, row in iter_json_lines(path, "agieval", q):
            why = require(row, ("question", "options", "label"))
            if not why and (not isinstance(row["options"], list) or len(row["options"]) < 2):
                why = "wrong type: options must be a list of at least 2 strings"
            gold = None if why else letters_of(_label(row), len(row["options"]))
            if not why and gold is None:
                why = f"bad value: label {row.get('label')!r} is not option letters"
            if why:
                q.add(source="agieval", file=path.name, line=line, reason=why, raw=row)
                continue
            multi = name in MULTI_SETS  # scored as letter sets there, as AGIEval does
            out.append(mc_record(kind="agieval", key=(name, line), split=PASS_SPLIT, gold=gold,
                                 messages=[*turns, {"role": "user", "content": zero_shot_prompt(row)}],
                                 metric="multi_choice" if multi else "choice",
                                 meta={"subject": name, "file": path.name, "line": line}))
    if not seen:
        raise BenchmarkError(f"agieval: none of {sets} found as <set>.jsonl under {v1} — give the folder with "
                             f"{HOLDS}")
    return Suite(spec.suite_name, PASS_SPLIT, out, shots=shots, max_tokens=16, group_key="subject",
                 kind="agieval", rejected=quarantine_rows(q))
