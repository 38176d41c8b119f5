"""``doitray eval check``: reference answers score 100% on every suite format; broken items are listed."""
from __future__ import annotations

import json

import pytest

from doitray.cli import main
from doitray.eval.check import check_suites
from doitray.eval.suites import agieval_suite, cmmlu_suite, doit_suites, from_records, split_mc
from doitray.records import make_record

Q = "题干{}\nA. 甲\nB. 乙\nC. 丙\nD. 丁"


def r(i, ability, user, gold, split="test", **kw):
    return make_record(id=f"{ability}-{i}", ability=ability, source="t", split=split,
                       messages=[{"role": "user", "content": user}, {"role": "assistant", "content": gold}], **kw)


def doit_like():
    recs = [r(1, "biology", Q.format(1), "B"), r(2, "history", Q.format(2), "C"), r(3, "history", "秦统一六国。", "正确"),
            r(4, "chinese", "春眠不觉晓，处处闻啼____。", "鸟"), r(5, "chinese", Q.format(5), "A"),
            r(6, "ethics", Q.format(6), "ABD"), r(7, "math", "1/2+0 等于？", "计算：\\boxed{\\frac{1}{2}}", answer="0.5"),
            r(8, "math_en", "2+2?", "2 + 2 = 4\n#### 4", answer="4"),
            make_record(id="code-9", ability="code", source="t", split="test", question_format="rank",
                        messages=[{"role": "user", "content": "写代码"}], choices=["def f(): pass", "x", "y"]),
            r(10, "biology", Q.format(10), "D", split="valid"),
            make_record(id="ood-1", ability="biology", source="t", split="test", meta={"ood": True, "subject": "physician"},
                        messages=[{"role": "user", "content": Q.format("d")}, {"role": "assistant", "content": "A"},
                                  {"role": "user", "content": Q.format(11)}, {"role": "assistant", "content": "C"}])]
    return recs


def test_doit_suites_split_and_ood():
    suites = doit_suites(doit_like(), "test")
    assert [s.name for s in suites] == ["doit", "doit_ood"]
    assert len(suites[0]) == 9 and suites[1].groups() == ["physician"]
    assert [len(s) for s in doit_suites(doit_like(), "valid")] == [1]


def test_reference_answers_score_100_on_doit_like_suites():
    rep = check_suites(doit_suites(doit_like(), "test"))
    assert rep["ok"], rep
    groups = {g["group"]: g for s in rep["suites"] for g in s["groups"]}
    assert groups["history"]["n"] == 2 and groups["history"]["accuracy"] == 1.0


def test_broken_items_are_listed_with_reasons():
    bad = [r(1, "biology", Q.format(1), "B or C"),  # gold is not a letter
           make_record(id="dup", ability="role_play", source="t", split="test", question_format="rank",
                       messages=[{"role": "user", "content": "说话"}], choices=["你好", "你好", "再见"]),
           r(3, "math", "?", "答案：3", answer="4"),  # worked reply disagrees with the answer field
           r(4, "general", "hello", "hi")]  # judge: skipped
    rep = check_suites([from_records("bad", bad)])
    assert not rep["ok"]
    fails = {f["id"]: f["reason"] for s in rep["suites"] for g in s["groups"] for f in g["failures"]}
    assert "not a single letter" in fails["biology-1"]
    assert "identical to the gold" in fails["dup"]
    assert "parsed '3' but gold is '4'" in fails["math-3"]
    skipped = {g["group"]: g["skipped"] for s in rep["suites"] for g in s["groups"]}
    assert skipped["general"] == 1


def test_cmmlu_and_agieval_prompts_and_check():
    test = [r(i, "chinese", Q.format(i), "ABCD"[i % 4], meta={"subject": "chinese_history"}) for i in range(4)]
    dev = [r(10 + i, "chinese", Q.format(f"dev{i}"), "A", split="train", meta={"subject": "chinese_history"})
           for i in range(6)]
    s5 = cmmlu_suite(test, dev, shots=5)
    user = s5.records[0]["messages"][0]["content"]
    assert user.startswith("以下是关于chinese history的单项选择题，请直接给出正确答案的选项。\n\n")
    assert user.count("题目：") == 6 and user.endswith("答案是：") and user.count("答案是：A\n\n") == 5
    assert s5.groups() == ["China specific"] and s5.max_tokens == 1
    assert len(cmmlu_suite(test, dev, shots=0).records[0]["messages"][0]["content"].split("题目：")) == 2
    multi = r(99, "chinese", Q.format(99), "AB", meta={"subject": "gaokao-history"})
    ag = agieval_suite(test[:2] + [multi], test[2:], shots=1)
    assert len(ag) == 2 and ag.excluded and ag.excluded[0]["id"] == "chinese-99"
    assert ag.records[0]["messages"][-2]["content"].endswith("答案：从A到D, 我们应选择")
    rep = check_suites([s5, cmmlu_suite(test, dev, shots=0), agieval_suite(test, shots=0)])
    assert rep["ok"], rep


def test_split_mc():
    stem, opts = split_mc("问题是什么\nA. 一\nB. 二\nC. 三\nD. 四")
    assert stem == "问题是什么" and opts == ["一", "二", "三", "四"]


def _cli_json(capsys, argv):
    code = main(argv + ["--json"])
    return code, json.loads(capsys.readouterr().out)


def test_cli_check_jsonl_records(tmp_path, capsys):
    path = tmp_path / "suite.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for rec in doit_like()[:3]:
            row = {"id": rec["id"], "ability": rec["ability"], "split": rec["split"], "messages": rec["messages"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    code, rep = _cli_json(capsys, ["eval", "check", str(path), "--format", "jsonl"])
    assert code == 0 and rep["ok"]
    assert {g["group"] for g in rep["suites"][0]["groups"]} == {"biology", "history"}


def test_cli_check_missing_path_is_a_clear_error(capsys):
    assert main(["eval", "check", "/nonexistent/suite.jsonl"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_check_synthetic_suite(capsys):
    code, rep = _cli_json(capsys, ["eval", "check", "synthetic", "--split", "test"])
    bad = [f for s in rep["suites"] for g in s["groups"] for f in g["failures"]]
    assert code == 0 and rep["ok"], bad[:5]
    assert len(rep["suites"][0]["groups"]) >= 5


def test_cli_check_mbpp_through_the_reader(capsys):
    """MBPP-shaped rows (CRLF and tab-indented code, a setup line) through the reader, the programs and the sandbox."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "mbpp_sample.jsonl"
    code, rep = _cli_json(capsys, ["eval", "check", str(path)])
    g = rep["suites"][0]["groups"][0]
    assert code == 0 and rep["ok"] and g["n"] == 5 and g["correct"] == 5, g["failures"]
    assert rep["sandbox"]
