"""Benchmark suites from typed study entries: each kind reads its published layout (tests/assets/benchmarks),
its reference answers score 100% through ``doitray eval check --kind``, prompts are the benchmarks' own, bad rows
are quarantined and counted, ``limit`` is a seeded stratified subset, misspelt keys are refused by name, the plan
lists every suite, and a benchmark suite leaves a cell's id alone."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from doitray.cli import main
from doitray.eval.benchmarks import JudgeSpec, SuiteSpec, build_benchmark, build_suites
from doitray.eval.check import check_suites
from doitray.eval.scorers import meta_of

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "benchmarks"
JUDGE = JudgeSpec(url="http://judge.invalid/v1", model="none")  # never called: nothing here asks a judge

KINDS = {  # kind -> (path, shots, items, groups)
    "cmmlu": ("cmmlu", 5, 6, {"China specific", "Humanities"}),
    "ceval": ("ceval", 5, 3, {"high_school_history"}),
    "agieval": ("agieval", 3, 9, {"logiqa-zh", "gaokao-history", "jec-qa-kd"}),
    "c3": ("c3", None, 4, {"c3-d", "c3-m"}),
    "logiqa": ("logiqa", None, 3, {"logiqa"}),
    "gsm8k": ("gsm8k/test.jsonl", None, 3, {"math_en"}),
    "humaneval": ("humaneval/HumanEval.jsonl.gz", None, 2, {"code"}),
    "mbpp": ("mbpp/mbpp.jsonl", None, 2, {"code"}),
    "jsonl": ("jsonl/records.jsonl", None, 2, {"math", "biology"}),
    "mt_bench": ("mt_bench/data", None, 4, {"general"}),
}


def entry(kind: str, **kw) -> SuiteSpec:
    path, shots, _, _ = KINDS[kind]
    return SuiteSpec(kind=kind, path=str(ASSETS / path), shots=kw.pop("shots", shots),
                     judge=JUDGE if kind == "mt_bench" else None, **kw)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_reads_its_published_layout_and_scores_100(kind, capsys):
    _, shots, n, groups = KINDS[kind]
    s = build_benchmark(entry(kind))
    assert (len(s), set(s.groups()), s.split, s.kind, s.rejected, s.excluded) == (n, groups, "test", kind, [], [])
    rep = check_suites([s])
    assert rep["ok"], rep
    # and through the command a user runs
    args = ["eval", "check", "--kind", kind, str(ASSETS / KINDS[kind][0])] + (["--shots", str(shots)] if shots else [])
    assert main(args) == 0
    assert "all reference answers score 100%" in capsys.readouterr().out


def test_cmmlu_prompt_is_cmmlus_own():
    """Header with the subject's Chinese name, the 5 dev rows in file order as "题目：…答案是：X", the question."""
    s = build_benchmark(entry("cmmlu"))
    rec = next(r for r in s.records if meta_of(r)["subject"] == "arts")
    user = rec["messages"][0]["content"]
    with open(ASSETS / "cmmlu/dev/arts.csv", encoding="utf-8") as f:
        dev = list(csv.DictReader(f))
    with open(ASSETS / "cmmlu/test/arts.csv", encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    demo = "".join(f"题目：{d['Question']}" + "".join(f"\n{c}. {d[c]}" for c in "ABCD") + f"\n答案是：{d['Answer']}\n\n"
                   for d in dev)
    q = f"题目：{first['Question']}" + "".join(f"\n{c}. {first[c]}" for c in "ABCD") + "\n答案是："
    assert user == "以下是关于艺术学的单项选择题，请直接给出正确答案的选项。\n\n" + demo + q
    assert rec["messages"][1]["content"] == first["Answer"] and meta_of(rec)["category"] == "Humanities"
    zero = build_benchmark(entry("cmmlu", shots=0))
    assert zero.name == "cmmlu_0shot" and "答案是：C\n\n" not in zero.records[0]["messages"][0]["content"]


def test_ceval_prompt_and_blank_test_answers_quarantined():
    s = build_benchmark(entry("ceval"))
    user = s.records[0]["messages"][0]["content"]
    assert user.startswith("以下是中国关于高中历史考试的单项选择题，请选出其中的正确答案。\n\n秦朝统一全国后推行的货币是____\nA. 刀币")
    assert user.count("\n答案：") == 6 and user.endswith("D. 汉朝\n答案：")
    test = build_benchmark(entry("ceval", split="test", shots=0))  # the public test split has no answers
    assert len(test) == 0 and len(test.rejected) == 2
    assert all(r["reason"] == "missing field: answer" or r["reason"].startswith("empty content") for r in test.rejected)


def test_agieval_uses_its_published_demos_and_scores_multi_answer_sets_as_sets():
    s = build_benchmark(entry("agieval", shots=2))
    rec = next(r for r in s.records if meta_of(r)["subject"] == "logiqa-zh")
    msgs = rec["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3
    assert msgs[0]["content"].endswith("\n答案：从A到D, 我们应选择") and "问题：" in msgs[0]["content"]
    assert msgs[1]["content"] in "ABCD" and len(msgs[1]["content"]) == 1
    with open(ASSETS / "agieval/data/v1/logiqa-zh.jsonl", encoding="utf-8") as f:
        row = json.loads(f.readline())
    assert msgs[4]["content"] == (row["passage"] + "问题：" + row["question"] + " 选项：" + " ".join(row["options"])
                                  + "\n答案：从A到D, 我们应选择") and msgs[5]["content"] == row["label"]
    jec = [r for r in s.records if meta_of(r)["subject"] == "jec-qa-kd"]
    assert {meta_of(r)["metric"] for r in jec} == {"multi_choice"}
    with pytest.raises(ValueError, match="gaokao-english"):
        build_benchmark(entry("agieval", abilities=["gaokao-english"]))


def test_bad_rows_are_quarantined_and_counted(tmp_path):
    root = tmp_path / "cmmlu"
    shutil.copytree(ASSETS / "cmmlu", root)
    with open(root / "test/arts.csv", "a", encoding="utf-8") as f:
        f.write("3,坏题,甲,乙,丙,丁,E\n4,,甲,乙,丙,丁,A\n")
    s = build_benchmark(SuiteSpec(kind="cmmlu", path=str(root), shots=5))
    assert len(s) == 6 and [(r["file"], r["line"]) for r in s.rejected] == [("test/arts.csv", 5), ("test/arts.csv", 6)]
    assert "bad value" in s.rejected[0]["reason"] and "Question" in s.rejected[1]["reason"]
    lines = (ASSETS / "logiqa/test_zh.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "test_zh.txt").write_text("\n".join(lines + ['{"text": "t", "question": "q", "options": ["a"], "answer": 0}',
                                                             "not json"]) + "\n", encoding="utf-8")
    s = build_benchmark(SuiteSpec(kind="logiqa", path=str(tmp_path / "test_zh.txt")))
    assert len(s) == 3 and len(s.rejected) == 2


def test_limit_is_a_seeded_stratified_subset():
    a = build_benchmark(entry("agieval", limit=4))
    b = build_benchmark(entry("agieval", limit=4))
    assert [r["id"] for r in a.records] == [r["id"] for r in b.records] and len(a) == 4
    assert set(a.groups()) == {"logiqa-zh", "gaokao-history", "jec-qa-kd"}  # every set keeps a share
    assert [r["id"] for r in build_benchmark(entry("agieval", limit=9)).records] == \
        [r["id"] for r in build_benchmark(entry("agieval")).records]


def test_suite_entries_refuse_misspelt_and_misplaced_keys():
    from doitray.study.spec import StudyFileError, parse_study

    base = {"name": "t", "storage": "/tmp/t", "sources": [{"name": "a", "format": "synthetic"}],
            "models": {"s": {"preset": "tiny-s"}}, "factors": {"model": ["s"], "volume": [10]},
            "tokenizer": {"train_vocab_size": 512}}
    bad = [({"kind": "cmmlu", "path": "x", "shot": 5}, "evaluation.suites.0.shot: unknown field"),
           ({"kind": "cmmlux", "path": "x"}, "evaluation.suites.0.kind: Input should be 'pool', 'cmmlu'"),
           ({"kind": "cmmlu"}, "path: kind cmmlu reads the benchmark from a path"),
           ({"kind": "gsm8k", "path": "x", "shots": 5}, "shots: kind gsm8k has no k-shot prompt"),
           ({"kind": "cmmlu", "path": "x", "shots": 8}, "shots: 8 > 5"),
           ({"kind": "mt_bench", "path": "x"}, "judge: kind mt_bench needs a judge"),
           ({"kind": "mt_bench", "path": "x", "judge": {"path": "j", "temprature": 0}},
            "evaluation.suites.0.judge.temprature: unknown field"),
           ({"kind": "cmmlu", "path": "x", "limit_per_ability": 3}, "limit_per_ability: pool only"),
           ({"path": "x"}, "path: not used by kind pool")]
    for suite, msg in bad:
        with pytest.raises(StudyFileError, match=msg.replace("(", r"\(").replace("[", r"\[")):
            parse_study({**base, "evaluation": {"suites": [suite]}})
    with pytest.raises(StudyFileError, match="suite name 'cmmlu_5shot' is already used"):
        parse_study({**base, "evaluation": {"suites": [{"kind": "cmmlu", "path": "x", "shots": 5}] * 2}})
    ok = parse_study({**base, "evaluation": {"suites": [{"limit_per_ability": 2, "ood": False}]}})
    assert ok.evaluation.model_dump()["suites"] == [{"limit_per_ability": 2, "ood": False}]  # dumps as written


def _study(tmp_path, suites):
    from doitray.study.spec import parse_study

    return parse_study({"name": "bench", "storage": str(tmp_path / "runs"),
                        "sources": [{"name": "a", "format": "synthetic",
                                     "options": {"train": 20, "valid": 4, "test": 4, "synthetic": 0}}],
                        "models": {"s": {"preset": "tiny-s"}}, "factors": {"model": ["s"], "volume": [10, 20]},
                        "tokenizer": {"train_vocab_size": 512}, "evaluation": {"suites": suites}})


def test_a_benchmark_suite_leaves_a_cells_id_alone(tmp_path):
    from doitray.study.cells import expand_cells

    plain = [c.cell_id for c in expand_cells(_study(tmp_path, []))]
    pool = [c.cell_id for c in expand_cells(_study(tmp_path, [{"kind": "pool"}]))]
    more = expand_cells(_study(tmp_path, [{"kind": "pool"}, {"kind": "cmmlu", "path": str(ASSETS / "cmmlu")}]))
    assert plain != [c.cell_id for c in expand_cells(_study(tmp_path, [{"limit_per_ability": 1}]))]
    assert [c.cell_id for c in more] == pool  # scored on test only: training and selection are unchanged
    assert more[0].content["evaluation"]["suites"][1]["kind"] == "cmmlu"  # the cell still knows it
    assert plain == pool  # the pool suite at its defaults is what an empty list means
    alone = [c.cell_id for c in expand_cells(_study(tmp_path, [{"kind": "cmmlu", "path": str(ASSETS / "cmmlu")}]))]
    assert alone != plain  # no pool suite at all: another evaluation of the cells' own data


def test_plan_lists_every_suite_with_counts_shots_and_tokens(tmp_path, monkeypatch, capsys):
    from doitray.study.plan import plan_study

    monkeypatch.setenv("DOITRAY_CACHE_DIR", str(tmp_path / "cache"))
    spec = _study(tmp_path, [{"kind": "pool", "limit": 5}, {"kind": "cmmlu", "path": str(ASSETS / "cmmlu"), "shots": 5},
                             {"kind": "mt_bench", "path": str(ASSETS / "mt_bench/data"),
                              "judge": {"path": str(tmp_path / "no-judge-here")}}])
    rows = {r["suite"] + ":" + r["note"][:9]: r for r in plan_study(spec).suites}
    cm, mt = rows["cmmlu_5shot:"], next(r for k, r in rows.items() if k.startswith("mt_bench"))
    assert (cm["items"], cm["shots"], cm["kind"]) == (6, 5, "cmmlu") and cm["tokens"] > 6 * 300 / 3
    assert mt["items"] == 4 and mt["judge_tokens"] > 0 and "not loaded" in mt["note"]  # the judge is not touched
    pool = [r for r in plan_study(spec).suites if r["kind"] == "pool"]
    assert {r["items"] for r in pool} == {5} and len(pool) == 2  # valid (selection) and test
    dry = plan_study(spec, with_data=False)
    assert [r["items"] for r in dry.suites] == [None] * 3 and "--no-data" in dry.suites[0]["note"]
    text = dry.text()
    assert "evaluation suites" in text and "cmmlu_5shot" in text


def test_cell_suites_pool_everywhere_benchmarks_on_test(tmp_path):
    from doitray.study.prepare import study_pool

    spec = _study(tmp_path, [{"kind": "pool", "ood": False}, {"kind": "gsm8k", "path": str(ASSETS / "gsm8k/test.jsonl")}])
    pool = study_pool(spec, str(tmp_path / "cache"))
    entries = [s.model_dump(exclude_defaults=True) for s in spec.evaluation.suites]  # as a cell's content holds them
    valid = build_suites(entries, "valid", pool=pool, abilities=["math", "code"], max_tokens=8)
    test = build_suites(entries, "test", pool=pool, abilities=["math", "code"], max_tokens=8)
    assert [s.name for s in valid] == ["doit"] and [s.name for s in test] == ["doit", "gsm8k"]
    assert {r["ability"] for r in test[0].records} <= {"math", "code"} and test[0].max_tokens == 8


def test_tidy_keeps_subject_benchmarks_out_of_the_ability_panels():
    import pandas as pd

    from doitray.analysis.tables import Results, tidy

    row = dict(cell_id="c", checkpoint="s0-e1", stage=0, step=1, epoch=1.0, split="test", metric="m", n=3,
               chance=0.25, ci_low=0.0, ci_high=1.0)
    scores = pd.DataFrame([{**row, "suite": "doit", "ability": "math", "value": 0.5},
                           {**row, "suite": "doit", "ability": "overall", "value": 0.5},
                           {**row, "suite": "cmmlu_5shot", "ability": "STEM", "value": 0.3},
                           {**row, "suite": "cmmlu_5shot", "ability": "overall", "value": 0.3},
                           {**row, "suite": "mt_bench", "ability": "general", "value": 0.2},
                           {**row, "suite": "mt_bench", "ability": "overall", "value": 0.2}])
    cells = pd.DataFrame([{"cell_id": "c", "state": "done", "model": "s", "volume": 10, "construction": "curated"}])
    study = {"evaluation": {"suites": [{"kind": "pool"}, {"kind": "cmmlu", "path": "x", "shots": 5},
                                       {"kind": "mt_bench", "path": "y", "judge": {"path": "j"}}]}}
    t = tidy(Results(cells=cells, checkpoints=pd.DataFrame(), scores=scores, study=study))
    assert sorted(zip(t["suite"], t["panel"], t["value"])) == [("doit", "math", 0.5), ("doit", "overall", 0.5),
                                                                ("mt_bench", "general", 0.2)]
