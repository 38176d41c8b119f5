"""Scorers and sandbox on the real public data in ../shared/data (skipped when absent)."""
from __future__ import annotations

import json

import pytest

from doitray.eval.check import check_suites
from doitray.eval.suites import doit_suites, from_records

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


def test_gsm8k_and_doit_format_checks_through_the_cli_pass_100(shared_data, capsys):
    """``doitray eval check`` on GSM8K's test file (1,319 items, the raw "… #### n" solutions as the model's
    output) and on the DoIT-format pool: every gold reply scores as correct, through the readers."""
    from doitray.cli import main

    code = main(["eval", "check", str(shared_data / "gsm8k" / "test.jsonl"), "--json"])
    gsm = _groups(json.loads(capsys.readouterr().out))["math_en"]
    assert code == 0 and gsm["n"] == 1319 and gsm["correct"] == 1319, gsm["failures"][:3]
    code = main(["eval", "check", str(shared_data / "doit-format"), "--split", "test", "--json"])
    rep = json.loads(capsys.readouterr().out)
    bad = {g: v["failures"][:2] for g, v in _groups(rep).items() if v["failures"]}
    assert code == 0 and rep["ok"], bad
    assert all(g["correct"] == g["n"] > 0 for g in _groups(rep).values())


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
