"""A failed evaluation is a visible failure, never a stored zero: engine failures (and too many item errors)
write nothing for the part and raise; item-level errors below the threshold are stored, scored 0."""
from __future__ import annotations

import pickle

import pytest

from doitray.eval.evaluate import MAX_ITEM_ERROR_SHARE, EvaluationFailed, evaluate_and_store, suite_key
from doitray.eval.suites import from_records
from doitray.records import make_record
from doitray.store import ResultsStore

Q = "题\nA. 甲\nB. 乙\nC. 丙\nD. 丁"


def mc(i, ability="biology", gold="A", content=Q):
    return make_record(id=f"{ability}{i}", ability=ability, source="t", split="valid",
                       messages=[{"role": "user", "content": content}, {"role": "assistant", "content": gold}])


def rank(i):
    return make_record(id=f"cw{i}", ability="creative_writing", source="t", split="valid", question_format="rank",
                       messages=[{"role": "user", "content": "写"}], choices=["a", "bb", "ccc"])


class FlakyEngine:
    """The ``generate``/``score`` interface the evaluation calls. ``fail``: ``"raise"`` (the handle raises on
    the ``at``-th call), ``"error"`` (the replica answers ``{"error"}`` for the prompts from index ``at`` on),
    ``"item"`` (scored sequences come back as the item's own fault), or ``None`` (healthy)."""

    def __init__(self, fail=None, at=1):
        self.fail, self.at, self.calls = fail, at, 0

    def generate(self, prompts, *, n=1, **kw):
        self.calls += 1
        if self.fail == "raise" and self.calls > self.at:
            raise RuntimeError("ActorDiedError: the replica died (preempted)")
        if self.fail == "error":
            return [{"outputs": [{"text": "A"}] * n} if j < self.at else {"error": "CUDA out of memory"}
                    for j in range(len(prompts))]
        return [{"outputs": [{"text": "A"}] * n} for _ in prompts]

    def score(self, seqs):
        self.calls += 1
        if self.fail == "raise":
            raise RuntimeError("RayServeException: handle call failed")
        if self.fail == "item":
            return [{"error": "continuation beyond the limit", "fault": "item"} for _ in seqs]
        return [{"loss": float(len(ids))} for ids, _ in seqs]


def kw(engine):
    return dict(template="doit", cell_id="cell", checkpoint="s0-epoch-1", step=1, epoch=1.0, engine=engine)


def parts(store):
    return store.parts("predictions"), store.parts("scores")


@pytest.mark.parametrize("fail,at", [("error", 3), ("raise", 0)])
def test_engine_failure_writes_nothing_and_a_rerun_scores_the_part(tiny_tokenizer_dir, tmp_path, fail, at):
    suite = from_records("doit", [mc(i) for i in range(40)], "valid")
    store = ResultsStore(str(tmp_path / "study"))
    with pytest.raises(EvaluationFailed) as ei:
        evaluate_and_store(store, tiny_tokenizer_dir, [suite], **kw(FlakyEngine(fail, at)))
    e = ei.value
    assert (e.suite, e.split, e.n_items) == ("doit", "valid", 40) and e.n_failed == 40 - at
    assert e.first_error.startswith("engine:") and "doit/valid" in str(e) and "s0-epoch-1" in str(e)
    assert parts(store) == ([], []) and store.read("scores").empty and store.read("predictions").empty
    assert str(pickle.loads(pickle.dumps(e))) == str(e)  # Tune ships the trial's exception between processes
    assert not store.has_part("scores", suite_key("cell", "s0-epoch-1", suite))
    res = evaluate_and_store(store, tiny_tokenizer_dir, [suite], **kw(FlakyEngine()))  # re-run: evaluated again
    assert not res.failures
    preds, scores = store.read("predictions"), store.read("scores")
    assert len(preds) == 40 and preds["error"].isna().all() and (scores["value"] == 1.0).all()


def test_one_engine_error_fails_only_its_part(tiny_tokenizer_dir, tmp_path):
    """A single engine error fails the part (no threshold for engine failures); healthy parts are still written."""
    ok = from_records("ok", [mc(i) for i in range(5)], "valid")
    bad = from_records("bad", [rank(i) for i in range(3)], "valid")
    store = ResultsStore(str(tmp_path / "study"))

    class OneBadScore(FlakyEngine):
        def score(self, seqs):
            return [{"error": "EngineDeadError"} if j == 4 else {"loss": 1.0} for j in range(len(seqs))]

    with pytest.raises(EvaluationFailed) as ei:
        evaluate_and_store(store, tiny_tokenizer_dir, [ok, bad], **kw(OneBadScore()))
    assert [(f.suite, f.n_failed, f.n_engine, f.n_items) for f in ei.value.failures] == [("bad", 1, 1, 3)]
    assert set(store.read("scores")["suite"]) == {"ok"} and set(store.read("predictions")["suite"]) == {"ok"}
    res = evaluate_and_store(store, tiny_tokenizer_dir, [ok, bad], **kw(FlakyEngine()))  # only "bad" is redone
    assert {p["suite"] for p in res.predictions} == {"bad"}
    assert set(store.read("scores")["suite"]) == {"ok", "bad"}


def test_item_errors_below_the_share_are_stored_scored_zero(tiny_tokenizer_dir, tmp_path):
    n = int(1 / MAX_ITEM_ERROR_SHARE) + 1  # one bad item is at most MAX_ITEM_ERROR_SHARE of the suite
    recs = [mc(i) for i in range(n - 1)] + [make_record(
        id="x0", ability="biology", source="t", split="valid", meta={"metric": "bogus"},
        messages=[{"role": "user", "content": "?"}, {"role": "assistant", "content": "A"}])]
    suite = from_records("doit", recs, "valid")
    store = ResultsStore(str(tmp_path / "study"))
    res = evaluate_and_store(store, tiny_tokenizer_dir, [suite], **kw(FlakyEngine()))
    assert not res.failures
    preds = store.read("predictions")
    bad = preds[preds["error"].notna()]
    assert list(bad["item_id"]) == ["x0"] and bad.iloc[0]["score"] == 0.0 and "bogus" in bad.iloc[0]["error"]
    overall = store.read("scores").set_index("ability").loc["overall"]
    assert overall["n"] == n and overall["value"] == pytest.approx((n - 1) / n)


def test_item_faults_from_the_engine_are_item_errors_but_too_many_fail(tiny_tokenizer_dir, tmp_path):
    """``fault: item`` replies are the item's own (not engine failures), yet a suite of them is not stored."""
    suite = from_records("cw", [rank(i) for i in range(4)], "valid")
    store = ResultsStore(str(tmp_path / "study"))
    with pytest.raises(EvaluationFailed) as ei:
        evaluate_and_store(store, tiny_tokenizer_dir, [suite], **kw(FlakyEngine("item")))
    f = ei.value.failures[0]
    assert (f.n_failed, f.n_engine, f.n_items) == (4, 0, 4) and f.first_error.startswith("item:")
    assert "more than 5% of the items failed" in str(ei.value)
    assert parts(store) == ([], [])
