"""Scorers and sandbox on the real public data in ../shared/data (skipped when absent)."""
from __future__ import annotations

import gzip
import json

import pytest

from doitray.eval.check import check_suites
from doitray.eval.scorers import ModelOutput, score_item
from doitray.eval.suites import doit_suites, from_records
from doitray.records import make_record

pytestmark = pytest.mark.realdata


def humaneval_records(path, body_of):
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    return [make_record(id=r["task_id"], ability="code", source="humaneval", split="test", question_format="generate",
                        messages=[{"role": "user", "content": r["prompt"]},
                                  {"role": "assistant", "content": body_of(r)}],
                        meta={"metric": "code_exec", "prompt": r["prompt"], "test": r["test"],
                              "entry_point": r["entry_point"]}) for r in rows]


def _groups(rep):
    return {g["group"]: g for s in rep["suites"] for g in s["groups"]}


def test_humaneval_canonical_passes_all_and_empty_body_none(shared_data):
    path = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    canon = _groups(check_suites([from_records("he", humaneval_records(path, lambda r: r["canonical_solution"]))]))
    assert canon["code"]["n"] == 164 and canon["code"]["correct"] == 164, canon["code"]["failures"][:3]
    empty = _groups(check_suites([from_records("he", humaneval_records(path, lambda r: ""))]))
    assert empty["code"]["n"] == 164 and empty["code"]["correct"] == 0


def test_gsm8k_gold_answers_as_model_output_score_100(shared_data):
    rows = [json.loads(line) for line in open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8")]
    assert len(rows) == 1319
    ok = 0
    for i, r in enumerate(rows):
        final = r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        rec = make_record(id=str(i), ability="math_en", source="gsm8k", split="test", answer=final,
                          messages=[{"role": "user", "content": r["question"]},
                                    {"role": "assistant", "content": r["answer"]}])
        ok += score_item(rec, ModelOutput(text=r["answer"])).score  # the raw "… #### n" solution as output
    assert ok == len(rows)


def test_gsm8k_and_doit_format_through_the_readers(shared_data, tmp_path):
    from doitray.data.sources import SourceSpec, read_sources

    specs = [SourceSpec(name="gsm8k", format="gsm8k", path=str(shared_data / "gsm8k" / "test.jsonl")),
             SourceSpec(name="doit", format="doit", path=str(shared_data / "doit-format"))]
    recs, _ = read_sources(specs, tmp_path)
    gsm = [r for r in recs if r["source"] == "gsm8k"]
    rep = check_suites([from_records("gsm8k", gsm)] + doit_suites([r for r in recs if r["source"] == "doit"], "test"))
    bad = {g: v["failures"][:2] for g, v in _groups(rep).items() if v["failures"]}
    assert rep["ok"], bad
    assert {"biology", "math", "math_en", "ethics", "understanding"} <= set(_groups(rep))
