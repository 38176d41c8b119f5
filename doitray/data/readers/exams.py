"""Readers for exam-style multiple choice: CMMLU (per-subject CSVs), AGIEval (JSONL), C3 (dialogue JSON).

Each item becomes a user turn with the options as ``\\nA. …\\nB. …`` and the gold letter(s) as the
assistant reply, as DoIT writes them. The ability comes from ``spec.ability`` or, for CMMLU/AGIEval,
from ``options.subject_map`` (subject or file stem -> ability; a default map covers DoIT's subjects).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterator

from doitray.data.readers.common import LETTERS, format_options, iter_json_any, iter_json_lines, list_files, require
from doitray.records import Quarantine, make_id, make_record

DEFAULT_SUBJECTS = {
    "chinese_history": "history", "world_history": "history", "high_school_history": "history",
    "gaokao-history": "history", "college_biology": "biology", "high_school_biology": "biology",
    "genetics": "biology", "gaokao-biology": "biology", "chinese_literature": "chinese",
    "ancient_chinese": "chinese", "gaokao-chinese": "chinese", "legal_and_moral_basis": "ethics",
    "ethics": "ethics", "logiqa-zh": "reasoning", "logiqa-en": "reasoning", "gaokao-mathqa": "math",
}


def _subject_ability(spec, subject: str) -> str:
    if spec.ability:
        return spec.ability
    smap = {**DEFAULT_SUBJECTS, **spec.options.get("subject_map", {})}
    return smap.get(subject, f"{spec.format}_{subject}")


def read_cmmlu(spec, q: Quarantine) -> Iterator[dict]:
    """CMMLU: ``<root>/{dev,test}/<subject>.csv`` with columns (index), Question, A, B, C, D, Answer.

    ``dev`` maps to split ``train`` and ``test`` to ``test`` unless ``options.split_map`` says otherwise.
    An unmapped subject yields ability ``cmmlu_<subject>``, which is quarantined as an unknown ability unless
    registered; restrict the subjects read with ``options.subjects``.
    """
    split_map = {"dev": "train", "val": "valid", "valid": "valid", "test": "test", **spec.options.get("split_map", {})}
    only = set(spec.options.get("subjects", []))
    root = Path(spec.path)
    for path in list_files(root, (".csv",)):
        subject = path.stem
        if only and subject not in only:
            continue
        rel = path.name if root.is_file() else str(path.relative_to(root))
        split = spec.split or split_map.get(path.parent.name, "test")
        ability = _subject_ability(spec, subject)
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            q.add(source=spec.name, file=rel, line=0, reason=f"undecodable text: {e.reason}")
            continue
        for line, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
            why = require(row, ("Question", "A", "B", "C", "D", "Answer"))
            if not why and row["Answer"].strip() not in LETTERS[:4]:
                why = f"bad value: Answer {row['Answer']!r} not in A-D"
            if why:
                q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
                continue
            user = row["Question"].strip() + format_options([row[k].strip() for k in "ABCD"])
            yield make_record(id=make_id(spec.name, split, subject, line), ability=ability, source=spec.name,
                              split=split, construction=spec.construction, question_format="generate",
                              messages=[{"role": "user", "content": user},
                                        {"role": "assistant", "content": row["Answer"].strip()}],
                              meta={"file": rel, "line": line, "subject": subject})


_OPT_PREFIX = re.compile(r"^\s*[\(（]?[A-J][\)）\.．]\s*")


def read_agieval(spec, q: Quarantine) -> Iterator[dict]:
    """AGIEval JSONL: ``passage`` (may be null), ``question``, ``options`` (``(A)…``), ``label`` (letter(s))."""
    root = Path(spec.path)
    for path in list_files(root, (".jsonl", ".json")):
        rel = path.name if root.is_file() else str(path.relative_to(root))
        ability = _subject_ability(spec, path.stem)
        split = spec.split or "test"
        for line, row in iter_json_lines(path, spec.name, q):
            why = require(row, ("question", "options", "label"))
            if not why and (not isinstance(row["options"], list) or len(row["options"]) < 2):
                why = "wrong type: options must be a list of at least 2 strings"
            label = row.get("label") if isinstance(row, dict) else None
            label = "".join(label) if isinstance(label, list) else label
            if not why and (not isinstance(label, str) or not label or
                            any(c not in LETTERS[: len(row["options"])] for c in label)):
                why = f"bad value: label {label!r} is not option letters"
            if why:
                q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
                continue
            passage = (row.get("passage") or "").strip()
            opts = [_OPT_PREFIX.sub("", str(o)).strip() for o in row["options"]]
            user = (passage + "\n" if passage else "") + row["question"].strip() + format_options(opts)
            yield make_record(id=make_id(spec.name, split, rel, line), ability=ability, source=spec.name, split=split,
                              construction=spec.construction, question_format="generate",
                              messages=[{"role": "user", "content": user}, {"role": "assistant", "content": label}],
                              meta={"file": rel, "line": line, "subject": path.stem})


def read_c3(spec, q: Quarantine) -> Iterator[dict]:
    """C3 JSON: a list of ``[[dialogue lines], [{question, choice, answer}], id]``; one record per question."""
    ability = spec.ability or "understanding"
    root = Path(spec.path)
    for path in list_files(root, (".json",)):
        rel = path.name if root.is_file() else str(path.relative_to(root))
        name = path.name.lower()
        split = spec.split or ("test" if "test" in name else "valid" if "dev" in name else "train")
        for line, item in iter_json_any(path, spec.name, q):
            if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], list) and isinstance(item[1], list)):
                q.add(source=spec.name, file=rel, line=line, reason="wrong type: item must be [lines, questions, id]",
                      raw=item)
                continue
            dialogue = "\n".join(str(x) for x in item[0])
            for k, qa in enumerate(item[1]):
                why = require(qa, ("question", "choice", "answer"))
                if not why and (not isinstance(qa["choice"], list) or qa["answer"] not in qa["choice"]):
                    why = "bad value: answer is not one of choice"
                if why:
                    q.add(source=spec.name, file=rel, line=line, reason=f"{why} (question {k})", raw=qa)
                    continue
                user = f"{dialogue}\n\n{qa['question']}" + format_options([str(c) for c in qa["choice"]])
                gold = LETTERS[qa["choice"].index(qa["answer"])]
                yield make_record(id=make_id(spec.name, split, item[2], k), ability=ability, source=spec.name,
                                  split=split, construction=spec.construction, question_format="generate",
                                  messages=[{"role": "user", "content": user}, {"role": "assistant", "content": gold}],
                                  meta={"file": rel, "line": line, "c3_id": str(item[2]), "q": k})
