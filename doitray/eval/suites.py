"""Evaluation suites: a named list of canonical records of one split, plus how they are asked.

A study names its suites; each is built from records (``doitray.data.sources.load_records`` or any
list of ``records.make_record`` dicts):

- ``doit_suites``   DoIT in-domain (per ability, one suite per split) and its C-Eval-style 5-shot
  out-of-domain files (records with ``meta.ood``; their demos are already chat turns);
- ``cmmlu_suite``   CMMLU 0-/5-shot in the DoIT authors' prompt, answered by the A–D logits of the first
  answer token; scores per category (``meta.category``, else subject) and overall;
- ``agieval_suite`` AGIEval's Chinese multiple-choice sets (single answer, 4 options) zero-/few-shot;
- ``from_records``  anything else: GSM8K, HumanEval, MBPP, MT-Bench (metric ``judge``), the generated suite
  of the embedded default.

Items that a builder cannot use (e.g. AGIEval items with several answers) are listed in
``Suite.excluded`` with the reason, never silently dropped.

A study's typed suite entries (``evaluation.suites``: pool, cmmlu, ceval, agieval, c3, logiqa, gsm8k, humaneval,
mbpp, mt_bench, jsonl) are read and built by ``doitray.eval.benchmarks`` (one module per benchmark family).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from doitray.eval.scorers import meta_of
from doitray.records import gold_text, make_record

# The category of each CMMLU subject (the CMMLU authors' grouping), for per-category averages.
CMMLU_CATEGORIES = {
    "STEM": ("anatomy", "astronomy", "college_actuarial_science", "college_engineering_hydrology",
             "college_mathematics", "college_medical_statistics", "computer_science", "conceptual_physics",
             "electrical_engineering", "elementary_mathematics", "genetics", "high_school_biology",
             "high_school_chemistry", "high_school_mathematics", "high_school_physics", "machine_learning",
             "virology"),
    "Humanities": ("arts", "college_law", "global_facts", "international_law", "jurisprudence", "logical",
                   "marxist_theory", "philosophy", "professional_law", "world_history", "world_religions"),
    "Social Science": ("ancient_chinese", "business_ethics", "chinese_civil_service_exam", "chinese_foreign_policy",
                       "college_education", "economics", "education", "high_school_geography", "journalism",
                       "management", "marketing", "professional_accounting", "professional_psychology",
                       "public_relations", "security_study", "sociology"),
    "Other": ("agronomy", "clinical_knowledge", "college_medicine", "computer_security", "food_science",
              "human_sexuality", "legal_and_moral_basis", "nutrition", "professional_medicine", "sports_science"),
    "China specific": ("chinese_driving_rule", "chinese_food_culture", "chinese_foreign_policy", "chinese_history",
                       "chinese_literature", "chinese_teacher_qualification", "construction_project_management",
                       "elementary_chinese", "elementary_commonsense", "ethnology", "high_school_politics",
                       "modern_chinese", "traditional_chinese_medicine"),
}
_SUBJECT_CATEGORY = {s: c for c, subs in CMMLU_CATEGORIES.items() for s in subs}

AGIEVAL_ZH_MCQ = ("logiqa-zh", "gaokao-chinese", "gaokao-geography", "gaokao-history", "gaokao-biology",
                  "gaokao-chemistry", "gaokao-mathqa", "jec-qa-kd", "jec-qa-ca", "gaokao-physics")


@dataclass
class Suite:
    """A named set of items of one split; ``group_key`` picks the score rows' ``ability`` column."""

    name: str
    split: str
    records: list[dict]
    shots: int = 0
    max_tokens: int | None = None  # overrides the per-metric default for generated replies
    group_key: str = "ability"  # "ability" or a meta field (e.g. "category" for CMMLU)
    excluded: list[dict] = field(default_factory=list)  # {"id", "reason"}
    rejected: list[dict] = field(default_factory=list)  # rows the reader quarantined: {"file", "line", "reason"}
    kind: str = "records"  # the ``SuiteSpec`` kind it was built from (``pool``, ``cmmlu``, …)
    judge: Any = None  # ``eval.judge.JudgeConfig`` of its judge items (MT-Bench)

    def group_of(self, rec: dict) -> str:
        if self.group_key == "ability":
            return rec["ability"]
        return str(meta_of(rec).get(self.group_key) or rec["ability"])

    def groups(self) -> list[str]:
        return sorted({self.group_of(r) for r in self.records})

    def __len__(self) -> int:
        return len(self.records)


def from_records(name: str, records: list[dict], split: str | None = None, **kw) -> Suite:
    """A suite of ``records`` (of ``split`` when given; the split of the first record otherwise)."""
    recs = [r for r in records if split is None or r["split"] == split]
    return Suite(name=name, split=split or (recs[0]["split"] if recs else "test"), records=recs, **kw)


def doit_suites(records: list[dict], split: str, *, abilities: list[str] | None = None,
                ood: bool = True) -> list[Suite]:
    """DoIT in-domain suite of ``split`` (``doit``) and, when present, its out-of-domain suite (``doit_ood``)."""
    recs = [r for r in records if r["split"] == split and (abilities is None or r["ability"] in abilities
                                                         or meta_of(r).get("ood"))]
    ind = [r for r in recs if not meta_of(r).get("ood")]
    out = [Suite("doit", split, ind)] if ind else []
    ood_recs = [r for r in recs if meta_of(r).get("ood")]
    if ood and ood_recs:
        out.append(Suite("doit_ood", split, ood_recs, shots=5, group_key="subject"))
    return out


# --- multiple-choice prompt builders ---------------------------------------------------------------
_OPT_LINE = re.compile(r"\n\s*([A-J])\s*[.．、:：)]\s*")


def split_mc(text: str) -> tuple[str, list[str]]:
    """(stem, options) of a question written as ``stem\\nA. …\\nB. …``."""
    parts = _OPT_LINE.split("\n" + text.strip("\n") if text.startswith(("A.", "A．")) else text)
    stem = parts[0].strip()
    opts = [parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)]
    return stem, opts


def _opts(opts: list[str]) -> str:
    return "".join(f"\n{'ABCDEFGHIJ'[i]}. {o}" for i, o in enumerate(opts))


def _mc_parts(rec: dict) -> tuple[str, list[str], str]:
    user = [m["content"] for m in rec["messages"] if m["role"] == "user"][-1]
    stem, opts = split_mc(user)
    return stem, opts, gold_text(rec).strip()


def _derive(rec: dict, name: str, messages: list[dict], meta_extra: dict) -> dict:
    meta = {**meta_of(rec), **meta_extra, "metric": "choice", "choice_mode": "logits", "orig_id": rec["id"]}
    return make_record(id=f"{rec['id']}-{name}", ability=rec["ability"], source=rec["source"], split=rec["split"],
                       construction=rec.get("construction") or "curated", question_format="generate",
                       messages=messages, meta=meta)


def cmmlu_suite(test: list[dict], dev: list[dict] | None = None, *, shots: int = 0, name: str | None = None,
                subject_names: dict[str, str] | None = None) -> Suite:
    """CMMLU in the DoIT authors' prompt: one user turn, header + ``shots`` dev examples + the question.

    ``test``/``dev`` are 4-option multiple-choice records with ``meta.subject``.
    """
    by_subject: dict[str, list[dict]] = {}
    for r in dev or []:
        by_subject.setdefault(str(meta_of(r).get("subject", "")), []).append(r)
    out, excluded = [], []
    for r in test:
        subject = str(meta_of(r).get("subject", ""))
        stem, opts, gold = _mc_parts(r)
        if len(opts) != 4 or gold not in "ABCD" or len(gold) != 1:
            excluded.append({"id": r["id"], "reason": f"not a 4-option single-answer item ({len(opts)} options, gold {gold!r})"})
            continue
        title = (subject_names or {}).get(subject, subject.replace("_", " "))
        prompt = f"以下是关于{title}的单项选择题，请直接给出正确答案的选项。\n\n"
        for d in by_subject.get(subject, [])[:shots]:
            ds, do, dg = _mc_parts(d)
            prompt += f"题目：{ds}{_opts(do)}\n答案是：{dg}\n\n"
        prompt += f"题目：{stem}{_opts(opts)}\n答案是："
        cat = meta_of(r).get("category") or _SUBJECT_CATEGORY.get(subject, "Other")
        out.append(_derive(r, f"cmmlu{shots}", [{"role": "user", "content": prompt}, {"role": "assistant", "content": gold}],
                           {"category": cat, "subject": subject}))
    return Suite(name or f"cmmlu_{shots}shot", "test", out, shots=shots, max_tokens=1, group_key="category",
                 excluded=excluded)


def agieval_suite(test: list[dict], demos: list[dict] | None = None, *, shots: int = 0,
                  name: str | None = None) -> Suite:
    """AGIEval Chinese MCQ (single answer, 4 options), zero-shot or with up to ``shots`` demo turns per set."""
    by_set: dict[str, list[dict]] = {}
    for d in demos or []:
        by_set.setdefault(str(meta_of(d).get("subject", "")), []).append(d)

    def turn(rec: dict) -> tuple[str, str]:
        stem, opts, gold = _mc_parts(rec)
        opt_s = " ".join(f"({'ABCD'[i]}){o}" for i, o in enumerate(opts))
        return f"{stem} 选项：{opt_s}\n答案：从A到D, 我们应选择", gold

    out, excluded = [], []
    for r in test:
        subject = str(meta_of(r).get("subject", ""))
        _, opts, gold = _mc_parts(r)
        if len(opts) != 4 or len(gold) != 1 or gold not in "ABCD":
            excluded.append({"id": r["id"], "reason": f"not a 4-option single-answer item ({len(opts)} options, gold {gold!r})"})
            continue
        msgs: list[dict] = []
        for d in by_set.get(subject, [])[:shots]:
            u, a = turn(d)
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        u, a = turn(r)
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        out.append(_derive(r, f"agieval{shots}", msgs, {"subject": subject}))
    return Suite(name or f"agieval_{'few' if shots else 'zero'}shot", "test", out, shots=shots, max_tokens=1,
                 group_key="subject", excluded=excluded)


def describe(suites: list[Suite]) -> list[dict]:
    """One row per suite: name, kind, split, items, groups, shots, excluded, rejected (rows the reader quarantined)."""
    return [{"suite": s.name, "kind": s.kind, "split": s.split, "items": len(s), "groups": len(s.groups()),
             "shots": s.shots, "excluded": len(s.excluded), "rejected": len(s.rejected)} for s in suites]


def records_from_jsonl(path: str) -> list[dict]:
    """Canonical records stored one per line (as ``records.to_table`` rows written to JSON lines)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
