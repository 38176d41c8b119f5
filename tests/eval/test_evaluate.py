"""Engine requests from the scorer registry, aggregation into store rows, bootstrap intervals (no engine needed)."""
from __future__ import annotations

import pytest

from doitray.eval.evaluate import items_of, score
from doitray.eval.scorers import ModelOutput
from doitray.eval.stats import bootstrap_ci
from doitray.eval.suites import from_records
from doitray.records import make_record

PRED_COLS = {"cell_id", "checkpoint", "suite", "split", "item_id", "ability", "metric", "prediction", "parsed", "gold",
             "score", "chance", "error", "sandbox"}
SCORE_COLS = {"cell_id", "checkpoint", "stage", "step", "epoch", "suite", "split", "ability", "metric", "value", "n",
              "chance", "ci_low", "ci_high"}
Q = "题\nA. 甲\nB. 乙\nC. 丙\nD. 丁"


def mc(i, ability, gold):
    return make_record(id=f"{ability}{i}", ability=ability, source="t", split="valid",
                       messages=[{"role": "user", "content": Q}, {"role": "assistant", "content": gold}])


def test_score_rows_true_mean_chance_ci_and_overall():
    recs = [mc(i, "biology", "A") for i in range(4)] + [mc(i, "reasoning", "B") for i in range(2)]
    suite = from_records("doit", recs, "valid")
    items = items_of([suite])
    outs = [ModelOutput(text=t) for t in ["A", "A", "A", "C", "B", None]]
    outs[-1].error = "engine: timeout"
    res = score(items, outs, cell_id="c1", checkpoint="ck1", stage=1, step=10, epoch=2.0, seed=3)
    assert len(res.predictions) == 6 and all(set(p) == PRED_COLS for p in res.predictions)
    failed = [p for p in res.predictions if p["error"]]
    assert len(failed) == 1 and failed[0]["score"] == 0.0  # kept, scored 0, with its error
    rows = {r["ability"]: r for r in res.scores}
    assert set(rows) == {"biology", "reasoning", "overall"} and all(set(r) == SCORE_COLS for r in res.scores)
    assert rows["biology"]["value"] == pytest.approx(0.75) and rows["biology"]["n"] == 4
    assert rows["biology"]["chance"] == pytest.approx(0.25)
    assert rows["reasoning"]["value"] == pytest.approx(0.5)
    # the true mean over abilities, not DoIT's halved average
    assert rows["overall"]["value"] == pytest.approx((0.75 + 0.5) / 2) and rows["overall"]["n"] == 6
    for r in res.scores:
        assert 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
        assert (r["stage"], r["step"], r["epoch"], r["split"]) == (1, 10, 2.0, "valid")
    again = score(items, outs, cell_id="c1", checkpoint="ck1", seed=3)
    assert [r["ci_low"] for r in again.scores] == [r["ci_low"] for r in res.scores]  # seeded


def test_bootstrap_ci_narrows_with_more_items():
    small, _ = bootstrap_ci({"a": [1, 0] * 5}, seed=0)
    big, _ = bootstrap_ci({"a": [1, 0] * 500}, seed=0)
    assert small["a"][1] - small["a"][0] > big["a"][1] - big["a"][0] > 0
    const, overall = bootstrap_ci({"a": [1.0] * 7, "b": [0.0] * 3}, seed=1)
    assert const["a"] == (1.0, 1.0) and overall == (0.5, 0.5)


class FakeEngine:
    """Records every request; answers each generation with ``reply`` and each scored sequence with its length."""

    def __init__(self, reply="A"):
        self.reply, self.generate_calls, self.scored = reply, [], []

    def generate(self, prompts, *, max_tokens, n, letter_ids, **kw):
        self.generate_calls.append({"max_tokens": max_tokens, "n": n, "letter_ids": letter_ids})
        return [{"outputs": [{"text": self.reply}] * n} for _ in prompts]

    def score(self, seqs):
        self.scored.extend(seqs)
        return [{"loss": float(len(ids))} for ids, _ in seqs]


def test_engine_requests_follow_the_scorer_registry(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from doitray.data.templates import get_template
    from doitray.eval.evaluate import infer
    from doitray.eval.scorers import SCORERS

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    recs = [mc(0, "biology", "A"),  # choice: letters
            make_record(id="m0", ability="math", source="t", split="valid",
                        messages=[{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]),
            make_record(id="c0", ability="code", source="t", split="valid", question_format="rank",
                        messages=[{"role": "user", "content": "写"}], choices=["a", "bb", "ccc"]),
            make_record(id="h0", ability="code", source="t", split="valid", meta={"metric": "code_exec"},
                        messages=[{"role": "user", "content": "def f():"}, {"role": "assistant", "content": "pass"}]),
            make_record(id="x0", ability="biology", source="t", split="valid", meta={"metric": "bogus"},
                        messages=[{"role": "user", "content": "?"}, {"role": "assistant", "content": "A"}])]
    items = items_of([from_records("s", recs, "valid")])
    assert [it.kind for it in items] == ["letters", "generate", "rank", "code", None]
    eng = FakeEngine()
    outs = infer(items, eng, tok, get_template("doit"), samples=3)
    budgets = {(c["max_tokens"], c["n"]) for c in eng.generate_calls}
    assert budgets == {(SCORERS["choice"].max_tokens, 1), (SCORERS["math"].max_tokens, 1),
                       (SCORERS["code_exec"].max_tokens, 3)}
    with_letters = [c for c in eng.generate_calls if any(c["letter_ids"])]
    assert len(with_letters) == 1 and with_letters[0]["max_tokens"] == SCORERS["choice"].max_tokens
    assert len(eng.scored) == 3 and outs[2].choice_losses and len(outs[2].choice_losses) == 3
    assert len(outs[3].samples) == 3
    assert outs[4].error == "unknown metric 'bogus'"
    res = score(items, outs, cell_id="c", checkpoint="k")
    bad = [p for p in res.predictions if p["item_id"] == "x0"][0]
    assert bad["score"] == 0.0 and bad["error"] == "unknown metric 'bogus'"
