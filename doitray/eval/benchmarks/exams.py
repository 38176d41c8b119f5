"""Chinese exam benchmarks as their authors publish them: CMMLU, C-Eval, C3, LogiQA 2.0.

Each is a 4-option (C3: 2–4) single-answer multiple choice scored by the answer letters' log-probabilities at
the first answer token. Prompts are the benchmarks' own:

- CMMLU (haonan-li/CMMLU ``src/mp_utils.py``): "以下是关于{科目}的单项选择题，请直接给出正确答案的选项。" then
  ``shots`` dev examples "题目：…\\nA. …\\n答案是：X" and the question; scored per category (CMMLU's grouping).
- C-Eval (hkust-nlp/ceval ``code/evaluator_series``, answer-only): "以下是中国关于{科目}考试的单项选择题，请选出其中
  的正确答案。" then ``shots`` dev examples "…\\nA. …\\n答案：X" and the question; scored per subject.
- C3 (nlpdata/c3) and LogiQA 2.0 (csitfun/LogiQA2.0): the dialogue / passage, the question and the options in one
  user turn, as the data readers write them; scored per file set (``c3-d`` / ``c3-m``) and as ``logiqa``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from doitray.data.readers.common import format_options, iter_json_lines, require
from doitray.data.readers.exams import read_c3, read_cmmlu
from doitray.data.sources import SourceSpec
from doitray.eval.benchmarks.common import (LETTERS, PASS_SPLIT, mc_record, need_dir, files_under,
                                            quarantine_rows)
from doitray.eval.benchmarks.subjects import CEVAL_SUBJECTS, CMMLU_NAMES
from doitray.eval.scorers import meta_of
from doitray.eval.suites import Suite, cmmlu_suite
from doitray.records import Quarantine


def _keep(subject: str, wanted: list[str] | None) -> bool:
    return not wanted or subject in wanted


def cmmlu(spec) -> Suite:
    """CMMLU ``<path>/{dev,test}/<subject>.csv`` → the ``shots``-shot suite of ``test`` (dev gives the shots)."""
    root = need_dir(spec.path, "cmmlu", holds="dev/ and test/ with one <subject>.csv each")
    files_under(root, "test/*.csv", "cmmlu", "dev/ and test/ with one <subject>.csv each")
    q = Quarantine()
    opts = {"subjects": spec.abilities} if spec.abilities else {}
    src = SourceSpec(name="cmmlu", format="cmmlu", path=str(root), options=opts)
    recs = list(read_cmmlu(src, q))
    want = {"train": "dev", "test": "test", "valid": "val"}[spec.split or "test"]
    test = [r for r in recs if meta_of(r)["file"].startswith(f"{want}/")]
    dev = [r for r in recs if meta_of(r)["file"].startswith("dev/")]
    s = cmmlu_suite(test, dev, shots=spec.shots or 0, name=spec.suite_name, subject_names=CMMLU_NAMES)
    s.split, s.kind, s.rejected = PASS_SPLIT, "cmmlu", quarantine_rows(q)
    for r in s.records:
        r["split"] = PASS_SPLIT
    return s


_CEVAL_SPLIT = {"train": "dev", "valid": "val", "test": "test"}


def _ceval_rows(path: Path, q: Quarantine) -> list[tuple[int, dict]]:
    rel = f"{path.parent.name}/{path.name}"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        q.add(source="ceval", file=rel, line=0, reason=f"undecodable text: {e.reason}")
        return []
    out = []
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
        why = require(row, ("question", "A", "B", "C", "D", "answer"))
        if not why and row["answer"].strip() not in "ABCD":
            why = f"bad value: answer {row['answer']!r} not in A-D"
        if why:
            q.add(source="ceval", file=rel, line=line, reason=why, raw=row)
            continue
        out.append((line, row))
    return out


def _ceval_example(row: dict, with_answer: bool) -> str:
    text = row["question"].strip() + "".join(f"\n{c}. {row[c].strip()}" for c in "ABCD")
    return text + ("\n答案：" + row["answer"].strip() + "\n\n" if with_answer else "\n答案：")


def ceval(spec) -> Suite:
    """C-Eval ``<path>/{dev,val,test}/<subject>_<split>.csv`` (columns id, question, A–D, answer, explanation)."""
    holds = "dev/, val/, test/ with <subject>_<split>.csv each (ceval-exam.zip)"
    root = need_dir(spec.path, "ceval", holds=holds)
    part = _CEVAL_SPLIT[spec.split or "valid"]
    files = files_under(root, f"{part}/*_{part}.csv", "ceval", holds)
    q = Quarantine()
    shots = spec.shots or 0
    out = []
    for f in files:
        subject = f.name[: -len(f"_{part}.csv")]
        if not _keep(subject, spec.abilities):
            continue
        zh = CEVAL_SUBJECTS.get(subject, (subject, subject.replace("_", " "), "Other"))[1]
        header = f"以下是中国关于{zh}考试的单项选择题，请选出其中的正确答案。\n\n"
        demos = ""
        if shots:
            dev = root / "dev" / f"{subject}_dev.csv"
            rows = _ceval_rows(dev, q) if dev.is_file() else []
            if len(rows) < shots:
                q.add(source="ceval", file=f"dev/{subject}_dev.csv", line=0,
                      reason=f"missing field: {shots}-shot needs {shots} dev rows, found {len(rows)}")
                continue
            demos = "".join(_ceval_example(r, True) for _, r in rows[:shots])
        for line, row in _ceval_rows(f, q):
            user = header + demos + _ceval_example(row, False)
            out.append(mc_record(kind="ceval", key=(part, subject, line), split=PASS_SPLIT,
                                 messages=[{"role": "user", "content": user}], gold=row["answer"].strip(),
                                 meta={"subject": subject, "file": f"{part}/{f.name}", "line": line,
                                       "category": CEVAL_SUBJECTS.get(subject, ("", "", "Other"))[2]}))
    return Suite(spec.suite_name, PASS_SPLIT, out, shots=shots, max_tokens=1, group_key="subject", kind="ceval",
                 rejected=quarantine_rows(q))


def c3(spec) -> Suite:
    """C3 ``c3-{d,m}-{train,dev,test}.json`` (``<path>`` or ``<path>/data``); grouped by set (c3-d, c3-m)."""
    holds = "c3-d-test.json, c3-m-test.json, … (the repository's data/)"
    root = need_dir(spec.path, "c3", holds=holds)
    part = {"train": "train", "valid": "dev", "test": "test"}[spec.split or "test"]
    data = root / "data" if (root / "data").is_dir() else root
    files = files_under(data, f"c3-*-{part}.json", "c3", holds)
    q = Quarantine()
    out = []
    for f in files:
        subset = f.name.rsplit("-", 1)[0]  # c3-d / c3-m
        if not _keep(subset, spec.abilities):
            continue
        for r in read_c3(SourceSpec(name=subset, format="c3", path=str(f), split="test"), q):
            user = r["messages"][0]["content"]
            out.append(mc_record(kind="c3", key=(part, r["id"]), split=PASS_SPLIT,
                                 messages=[{"role": "user", "content": user}], gold=r["messages"][1]["content"],
                                 meta={"subject": subset, "file": f.name, "line": meta_of(r)["line"],
                                       "c3_id": meta_of(r)["c3_id"]}))
    return Suite(spec.suite_name, PASS_SPLIT, out, max_tokens=1, group_key="subject", kind="c3",
                 rejected=quarantine_rows(q))


def logiqa(spec) -> Suite:
    """LogiQA 2.0 ``{train,dev,test}{_zh,}.txt`` (JSON lines: text, question, options, answer index)."""
    holds = "test_zh.txt / test.txt as in logiqa/DATA/LOGIQA"
    root = need_dir(spec.path, "logiqa", holds=holds)
    part = {"train": "train", "valid": "dev", "test": "test"}[spec.split or "test"]
    if root.is_file():
        files = [root]
    else:
        zh = root / f"{part}_zh.txt"
        files = [zh] if zh.is_file() else files_under(root, f"{part}.txt", "logiqa", holds)
    q = Quarantine()
    out = []
    for f in files:
        for line, row in iter_json_lines(f, "logiqa", q):
            why = require(row, ("text", "question", "options", "answer"))
            if not why and not (isinstance(row["options"], list) and len(row["options"]) >= 2):
                why = "wrong type: options must be a list of at least 2 strings"
            if not why and not (isinstance(row["answer"], int) and 0 <= row["answer"] < len(row["options"])):
                why = f"bad value: answer {row['answer']!r} is not an option index"
            if why:
                q.add(source="logiqa", file=f.name, line=line, reason=why, raw=row)
                continue
            user = f"{row['text'].strip()}\n{row['question'].strip()}" + format_options(
                [str(o).strip() for o in row["options"]])
            rid = row.get("id", row.get("example_id", line))
            out.append(mc_record(kind="logiqa", key=(f.stem, rid), split=PASS_SPLIT,
                                 messages=[{"role": "user", "content": user}], gold=LETTERS[row["answer"]],
                                 meta={"subject": "logiqa", "file": f.name, "line": line}))
    return Suite(spec.suite_name, PASS_SPLIT, out, max_tokens=1, group_key="subject", kind="logiqa",
                 rejected=quarantine_rows(q))
