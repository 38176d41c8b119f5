"""Scorers and sandbox on the real public data in ../shared/data (skipped when absent)."""
from __future__ import annotations

import json

import pytest

from doitray.eval.check import check_suites
from doitray.eval.scorers import ModelOutput, score_item
from doitray.eval.suites import doit_suites, from_records
from doitray.records import make_record

pytestmark = pytest.mark.realdata


def _groups(rep):
    return {g["group"]: g for s in rep["suites"] for g in s["groups"]}


def test_humaneval_check_through_the_cli_passes_164(shared_data, capsys):
    """The path a user takes: ``doitray eval check HumanEval.jsonl.gz`` (the reader, the programs, the sandbox)."""
    from doitray.cli import main

    code = main(["eval", "check", str(shared_data / "humaneval" / "HumanEval.jsonl.gz"), "--json"])
    rep = json.loads(capsys.readouterr().out)
    he = _groups(rep)["code"]
    assert code == 0 and he["n"] == 164 and he["correct"] == 164, he["failures"][:3]
    assert rep["sandbox"]


def test_humaneval_empty_bodies_pass_none(shared_data, tmp_path):
    from doitray.data.sources import SourceSpec, read_sources

    recs, _ = read_sources([SourceSpec(name="he", format="humaneval",
                                       path=str(shared_data / "humaneval" / "HumanEval.jsonl.gz"))], tmp_path)
    for r in recs:  # the gold reply replaced by an empty completion
        r["messages"] = [*r["messages"][:-1], {"role": "assistant", "content": ""}]
    empty = _groups(check_suites([from_records("he", recs)]))
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
