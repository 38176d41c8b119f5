"""Every reader on small files written here: good rows become records, bad rows are quarantined with reasons."""
from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from doitray.data.sources import SourceSpec, read_sources
from doitray.records import validate_record
from tests.data.conftest import doit_row, write_jsonl


def read(tmp_path, **spec):
    recs, q = read_sources([SourceSpec(name=spec.pop("name", "src"), **spec)], tmp_path / "cache")
    for r in recs:
        assert validate_record(r) == []
    return recs, q


def test_doit_flat_layout_and_ranking_builder(tmp_path):
    root = tmp_path / "corpus"
    write_jsonl(root / "train" / "math.json", [doit_row("math", i, "1+1?", "2", answer="2") for i in range(3)])
    write_jsonl(root / "valid" / "code.json", [doit_row("code", i, f"write f{i}", f"def f{i}(): pass") for i in range(4)])
    write_jsonl(root / "test" / "role_play.json",
                [doit_row("role_play", i, f"hi {i}", f"reply {i}", system="You are a pirate.") for i in range(3)])
    recs, q = read(tmp_path, format="doit", path=str(root))
    assert len(q) == 0 and len(recs) == 10
    by = {(r["split"], r["ability"]) for r in recs}
    assert by == {("train", "math"), ("valid", "code"), ("test", "role_play")}
    math = [r for r in recs if r["ability"] == "math"]
    assert all(r["answer"] == "2" and r["question_format"] == "generate" for r in math)
    code = sorted((r for r in recs if r["ability"] == "code"), key=lambda r: json.loads(r["meta"])["idx"])
    assert all(r["question_format"] == "rank" and len(r["choices"]) == 3 for r in code)
    assert code[0]["choices"][0] == "def f0(): pass" and "def f0(): pass" not in code[0]["choices"][1:]
    assert code[0]["messages"][-1]["role"] == "user"  # the gold reply is removed from the prompt
    rp = [r for r in recs if r["ability"] == "role_play"]
    assert all(r["messages"][0] == {"role": "system", "content": "You are a pirate."} for r in rp)
    again, _ = read(tmp_path, format="doit", path=str(root))
    assert [r["choices"] for r in again] == [r["choices"] for r in recs]  # deterministic negatives


def test_doit_release_layout_with_ceval_and_synthetic(tmp_path):
    from doitray import abilities

    root = tmp_path / "doit"
    write_jsonl(root / "curated" / "1000" / "ethics_1000.json", [doit_row("ethics", i, reply="AB") for i in range(2)])
    write_jsonl(root / "curated" / "full" / "ethics_full.json", [doit_row("ethics", i, reply="AB") for i in range(5)])
    write_jsonl(root / "curated" / "test" / "ethics_test.json", [doit_row("ethics", i) for i in range(2)])
    write_jsonl(root / "curated" / "test" / "ceval_physician.json",
                [doit_row("ceval_physician_fshot", i) for i in range(3)])
    write_jsonl(root / "curated" / "valid" / "creative_writing_valid.json",
                [{"messages": [{"role": "user", "content": f"write {i}"}], "type": "creative_writing", "idx": i,
                  "question_format": 1, "choices": [f"gold {i}", "n1", "n2"]} for i in range(2)])
    write_jsonl(root / "synthetic" / "40960" / "general_instruction_gpt4_41k.json",
                [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                  "type": "general", "idx": i, "question_format": 0} for i in range(4)])
    recs, q = read(tmp_path, format="doit", path=str(root))
    assert len(q) == 0
    counts = {}
    for r in recs:
        counts[(r["split"], r["ability"], r["construction"])] = counts.get((r["split"], r["ability"], r["construction"]), 0) + 1
    assert counts == {("train", "ethics", "curated"): 5, ("test", "ethics", "curated"): 2,
                      ("test", "ceval_physician", "curated"): 3, ("valid", "creative_writing", "curated"): 2,
                      ("train", "general", "synthetic"): 4}
    assert abilities.get("ceval_physician").metric == "choice"
    assert all(json.loads(r["meta"])["ood"] for r in recs if r["ability"] == "ceval_physician")
    cw = [r for r in recs if r["ability"] == "creative_writing"]
    assert all(r["question_format"] == "rank" and r["choices"][1:] == ["n1", "n2"] for r in cw)
    recs1000, _ = read(tmp_path, format="doit", path=str(root), options={"curated": "1000", "synthetic": False})
    assert sum(r["split"] == "train" for r in recs1000) == 2


def test_malformed_rows_are_quarantined_with_line_and_reason(tmp_path):
    path = tmp_path / "bad" / "train" / "math.json"
    path.parent.mkdir(parents=True)
    good = json.dumps(doit_row("math", 0, "1+1?", "2", answer="2"))
    rows = [good,
            '{"messages": [{"role": "user", "content": "trunc',  # truncated JSON
            json.dumps({"type": "math", "idx": 2, "question_format": 0}),  # missing messages
            json.dumps(doit_row("math", 3, "2+2?", "   ")),  # empty answer
            json.dumps(doit_row("astrology", 4)),  # unknown ability
            json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}],
                        "type": "math", "idx": 5}),  # unknown role
            json.dumps({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}],
                        "type": "math", "idx": 6}),  # wrong type
            json.dumps(doit_row("math", 0, "dup", "4")),  # duplicate id (same idx as line 1)
            json.dumps(doit_row("math", 8, "ok?", "5"))]
    path.write_bytes(("\n".join(rows) + "\n").encode() + b'{"messages": "\xff\xfe"}\n')
    recs, q = read(tmp_path, format="doit", path=str(tmp_path / "bad"))
    assert sorted(json.loads(r["meta"])["line"] for r in recs) == [1, 9]
    reasons = {r["line"]: r["reason"] for r in q.rows}
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8, 10}
    assert reasons[2].startswith("wrong type: invalid JSON")
    assert reasons[3].startswith("missing field: messages")
    assert reasons[4].startswith("empty content")
    assert reasons[5].startswith("unknown ability")
    assert reasons[6].startswith("unknown role")
    assert reasons[7].startswith("wrong type")
    assert reasons[8].startswith("duplicate id")
    assert reasons[10].startswith("undecodable text")
    assert all(r["file"].endswith("math.json") for r in q.rows)


def test_alpaca_and_sharegpt(tmp_path):
    (tmp_path / "alpaca.json").write_text(json.dumps([
        {"instruction": "Add", "input": "1 and 2", "output": "3"}, {"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "no output"}]))
    recs, q = read(tmp_path, format="alpaca", path=str(tmp_path / "alpaca.json"), ability="math")
    assert [r["messages"][0]["content"] for r in recs] == ["Add\n1 and 2", "Say hi"]
    assert recs[0]["ability"] == "math" and len(q) == 1 and q.rows[0]["reason"] == "missing field: output"
    write_jsonl(tmp_path / "sg.jsonl", [
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "b", "conversations": [{"from": "alien", "value": "?"}]},
        {"id": "c"}])
    recs, q = read(tmp_path, name="sg", format="sharegpt", path=str(tmp_path / "sg.jsonl"))
    assert len(recs) == 1 and recs[0]["ability"] == "general"
    assert recs[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert sorted(r["reason"].split(":")[0] for r in q.rows) == ["missing field", "unknown role"]


def test_gsm8k_humaneval_mbpp(tmp_path):
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [
        {"question": "2+3?", "answer": "2+3=<<2+3=5>>5\n#### 1,005"}, {"question": "x", "answer": "no final"}])
    recs, q = read(tmp_path, name="g", format="gsm8k", path=str(tmp_path / "gsm8k"))
    assert recs[0]["answer"] == "1005" and recs[0]["split"] == "test" and recs[0]["ability"] == "math_en"
    assert "<<" not in recs[0]["messages"][1]["content"] and len(q) == 1
    he = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(he, "wt") as f:
        f.write(json.dumps({"task_id": "HumanEval/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
                            "test": "assert f() == 1", "entry_point": "f"}) + "\n")
        f.write(json.dumps({"task_id": "HumanEval/1", "prompt": "def g():\n"}) + "\n")
    recs, q = read(tmp_path, name="he", format="humaneval", path=str(he))
    assert len(recs) == 1 and json.loads(recs[0]["meta"])["metric"] == "code_exec" and len(q) == 1
    write_jsonl(tmp_path / "mbpp.jsonl", [{"task_id": 2, "text": "Add.", "code": "def add(a,b): return a+b",
                                           "test_list": ["assert add(1,2)==3"]}, {"task_id": 3, "text": "x", "code": "y",
                                                                                  "test_list": "notalist"}])
    recs, q = read(tmp_path, name="mb", format="mbpp", path=str(tmp_path / "mbpp.jsonl"))
    assert "assert add(1,2)==3" in recs[0]["messages"][0]["content"] and q.rows[0]["reason"].startswith("wrong type")


def test_cmmlu_agieval_c3(tmp_path):
    for split in ("dev", "test"):
        d = tmp_path / "cmmlu" / split
        d.mkdir(parents=True)
        with open(d / "chinese_history.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["", "Question", "A", "B", "C", "D", "Answer"])
            w.writerow([0, "秦朝建于？", "前221", "前206", "前202", "前770", "A"])
            w.writerow([1, "bad", "a", "b", "c", "d", "E"])
    recs, q = read(tmp_path, name="cm", format="cmmlu", path=str(tmp_path / "cmmlu"))
    assert {r["split"] for r in recs} == {"train", "test"} and all(r["ability"] == "history" for r in recs)
    assert recs[0]["messages"][0]["content"] == "秦朝建于？\nA. 前221\nB. 前206\nC. 前202\nD. 前770"
    assert len(q) == 2 and all(r["line"] == 3 for r in q.rows)
    write_jsonl(tmp_path / "agi" / "gaokao-biology.jsonl", [
        {"passage": None, "question": "Which?", "options": ["(A)x", "(B)y", "(C)z", "(D)w"], "label": "C"},
        {"passage": "P", "question": "Multi?", "options": ["(A)x", "(B)y", "(C)z", "(D)w"], "label": ["A", "D"]},
        {"passage": None, "question": "Bad?", "options": ["(A)x", "(B)y"], "label": "Q"}])
    recs, q = read(tmp_path, name="agi", format="agieval", path=str(tmp_path / "agi"))
    assert [r["messages"][1]["content"] for r in recs] == ["C", "AD"] and recs[0]["ability"] == "biology"
    assert recs[1]["messages"][0]["content"].startswith("P\nMulti?\nA. x") and len(q) == 1
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / "c3-d-dev.json").write_text(json.dumps([
        [["男：你好", "女：你好"], [{"question": "谁先说话？", "choice": ["男", "女"], "answer": "男"},
                                 {"question": "bad", "choice": ["a"], "answer": "z"}], "1-1"]], ensure_ascii=False))
    recs, q = read(tmp_path, name="c3", format="c3", path=str(tmp_path / "c3"))
    assert len(recs) == 1 and recs[0]["split"] == "valid" and recs[0]["ability"] == "understanding"
    assert recs[0]["messages"][1]["content"] == "A" and q.rows[0]["reason"].startswith("bad value")


def test_generic_jsonl_and_parquet_with_field_map(tmp_path):
    write_jsonl(tmp_path / "g.jsonl", [{"q": "hi", "a": "yo", "skill": "general", "uid": "u1"},
                                       {"q": "hey", "skill": None}])
    fm = {"prompt": "q", "response": "a", "ability": "skill", "id": "uid"}
    recs, q = read(tmp_path, name="g", format="jsonl", path=str(tmp_path / "g.jsonl"), field_map=fm)
    assert len(recs) == 1 and recs[0]["messages"][1]["content"] == "yo" and q.rows[0]["reason"].startswith("missing field")
    pq.write_table(pa.Table.from_pylist([{"messages": [{"role": "user", "content": "a"},
                                                       {"role": "assistant", "content": "b"}], "ability": "math",
                                          "answer": "b"}]), tmp_path / "x.parquet")
    recs, q = read(tmp_path, name="p", format="parquet", path=str(tmp_path / "x.parquet"))
    assert recs[0]["ability"] == "math" and recs[0]["answer"] == "b" and len(q) == 0


def test_source_spec_errors_name_field_and_allowed_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="format"):
        SourceSpec(name="x", format="csvx", path="/tmp")
    with pytest.raises(ValidationError, match="unknown ability 'astro'"):
        SourceSpec(name="x", format="doit", path="/tmp", ability="astro")
    with pytest.raises(ValidationError, match="path is required"):
        SourceSpec(name="x", format="doit")
