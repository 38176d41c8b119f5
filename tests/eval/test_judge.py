"""MT-Bench's judge, without a model: the grading conversations against FastChat's own files (rebuilt here the
way FastChat's ``run_judge_single`` formats them), the ``[[n]]`` parser, and how unparsable judgments are counted
but not scored. (The plumbing through real deployments is in test_judge_serve.py.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from doitray.eval.benchmarks import JudgeSpec, SuiteSpec, build_benchmark
from doitray.eval.evaluate import items_of, score
from doitray.eval.judge import conversations, mt_bench_conversations, parse_judgment, record_judgments
from doitray.eval.scorers import ModelOutput, meta_of

DATA = Path(__file__).resolve().parents[1] / "assets" / "benchmarks" / "mt_bench" / "data"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def suite():
    return build_benchmark(SuiteSpec(kind="mt_bench", path=str(DATA), judge=JudgeSpec(path="/unused")))


def fastchat_single(question: dict, answers: list[str], prompts: dict, ref: dict | None, multi_turn: bool):
    """FastChat's run_judge_single prompt (fastchat/llm_judge/common.py), system + user."""
    name = ("single-math-v1" if ref else "single-v1") + ("-multi-turn" if multi_turn else "")
    p = prompts[name]
    kw = {}
    if ref is not None:
        kw["ref_answer_1"] = ref["choices"][0]["turns"][0]
        if multi_turn:
            kw["ref_answer_2"] = ref["choices"][0]["turns"][1]
    if multi_turn:
        user = p["prompt_template"].format(question_1=question["turns"][0], question_2=question["turns"][1],
                                           answer_1=answers[0], answer_2=answers[1], **kw)
    else:
        user = p["prompt_template"].format(question=question["turns"][0], answer=answers[0], **kw)
    return [{"role": "system", "content": p["system_prompt"]}, {"role": "user", "content": user}]


def test_grading_conversations_are_fastchats(suite):
    prompts = {p["name"]: p for p in _jsonl(DATA / "judge_prompts.jsonl")}
    refs = {r["question_id"]: r for r in _jsonl(DATA / "mt_bench/reference_answer/gpt-4.jsonl")}
    questions = {q["question_id"]: q for q in _jsonl(DATA / "mt_bench/question.jsonl")}
    answers = ["first answer", "second answer"]
    for rec in suite.records:
        qid = int(rec["id"].split("-")[-1])
        q = questions[qid]
        ref = refs.get(qid) if q["category"] in ("math", "reasoning", "coding") else None
        got = mt_bench_conversations(rec, answers, suite.judge.prompts)
        assert got == [fastchat_single(q, answers, prompts, ref, False), fastchat_single(q, answers, prompts, ref, True)]
    assert {meta_of(r)["category"] for r in suite.records} == {"writing", "reasoning", "math", "coding"}
    math_q = next(r for r in suite.records if r["id"] == "mt_bench-111")
    conv = mt_bench_conversations(math_q, answers, suite.judge.prompts)
    assert "[The Start of Reference Answer]" in conv[0][1]["content"] and "Area = 0" in conv[0][1]["content"]
    assert "### Reference answer:" in conv[1][1]["content"] and "### Assistant A:\nsecond answer" in conv[1][1]["content"]


def test_only_answered_turns_are_judged(suite):
    items = items_of([suite])
    outs = [ModelOutput(text="one turn only") for _ in items]
    outs[1].error = "engine: replica died"
    convs = conversations(items, outs, {0: ["a", "b"]}, suite.judge)
    assert [i for i, _ in convs] == [0, 0, 2, 3]  # item 0 both turns; 1 failed; 2 and 3 their turn 1 only


@pytest.mark.parametrize("text,want", [("Rating: [[7]]", 7.0), ("[[8.5]] is my rating", 8.5), ("I give it [6].", 6.0),
                                        ("[[3]] then [[9]]", 3.0), ("Rating: 7", None), ("[[11]]", None),
                                        ("", None), (None, None)])
def test_rating_parser_is_fastchats(text, want):
    assert parse_judgment(text) == want


def test_unparsable_judgments_are_counted_not_scored(suite):
    items = items_of([suite])
    outs = [ModelOutput(text="answer") for _ in items]
    convs = [(0, []), (0, []), (1, []), (1, []), (2, []), (3, [])]
    replies = [{"outputs": [{"text": "good. Rating: [[8]]"}]}, {"outputs": [{"text": "hm"}]},
               {"outputs": [{"text": "[[4]]"}]}, {"outputs": [{"text": "[[6]]"}]},
               {"outputs": [{"text": "no idea"}]}, {"error": "HTTP 500"}]
    record_judgments(outs, convs, replies)
    assert outs[0].ratings == [8.0] and outs[0].note == "1 of 2 judgment(s) unparsable"
    assert outs[1].ratings == [4.0, 6.0] and outs[1].note is None
    assert outs[2].ratings == [] and outs[3].error == "judge: HTTP 500"
    res = score(items, outs, cell_id="c", checkpoint="k", judge_id={suite.name: "tiny"})
    by = {p["item_id"]: p for p in res.predictions}
    assert by["mt_bench-81"]["score"] == pytest.approx(0.8) and "1 of 2 judgment(s) unparsable" in by["mt_bench-81"]["parsed"]
    assert math.isnan(by["mt_bench-111"]["score"]) and by["mt_bench-111"]["error"] == "no judge rating could be parsed"
    row = next(r for r in res.scores if r["ability"] == "general")
    # the unparsable item is left out of the mean; the failed call scores 0 and fails the part (engine failure)
    assert row["n"] == 3 and row["value"] == pytest.approx((0.8 + 0.5 + 0.0) / 3) and row["metric"] == "judge:tiny"
    assert [f.suite for f in res.failures] == [suite.name] and res.failures[0].n_engine == 1


def test_a_group_with_no_parsable_judgment_has_no_value(suite):
    items = items_of([suite])
    outs = [ModelOutput(text="x", ratings=[]) for _ in items]
    res = score(items, outs, cell_id="c", checkpoint="k", judge_id="tiny")
    row = next(r for r in res.scores if r["ability"] == "general")
    assert row["n"] == 0 and math.isnan(row["value"])
    assert res.failures and res.failures[0].n_failed == 4  # every item unparsable: the part is not stored
