"""End to end: a tiny exported checkpoint served by Ray Serve + vLLM (CPU), evaluated, stored."""
from __future__ import annotations

import pytest

from doitray.records import make_record

pytestmark = pytest.mark.slow

Q = "{}\nA. 甲\nB. 乙\nC. 丙\nD. 丁"
HE_META = {"metric": "code_exec", "entry_point": "add", "prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
           "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}


def _r(i, ability, user, gold, **kw):
    return make_record(id=f"{ability}-{i}", ability=ability, source="t", split="test",
                       messages=[{"role": "user", "content": user}, {"role": "assistant", "content": gold}], **kw)


def small_suite_records():
    return [
        _r(1, "biology", Q.format("1 plus 2?"), "B"), _r(2, "biology", Q.format("3 plus 4?"), "C"),
        _r(3, "history", "The fox is quick.", "正确"), _r(4, "chinese", "天地玄____", "黄"),
        _r(5, "ethics", Q.format("which?"), "AC"), _r(6, "math", "What is 3 plus 4?", "7", answer="7"),
        _r(7, "math_en", "What is 1 plus 2?", "1 + 2 = 3\n#### 3", answer="3"),
        make_record(id="cw-1", ability="creative_writing", source="t", split="test", question_format="rank",
                    messages=[{"role": "user", "content": "What is 2 plus 3?"}],
                    choices=["2 plus 3 is 5.", "The quick brown fox.", "天地玄黄"]),
        _r(8, "code", "Complete add.", "    return a + b\n", question_format="generate", meta=HE_META),
    ]


@pytest.fixture(scope="module")
def served(ray_local, tiny_checkpoint):
    from doitray.eval.engine import ServeEngine

    eng = ServeEngine(tiny_checkpoint, {"max_model_len": 512, "dtype": "float32"})
    yield eng
    eng.close()


def test_evaluate_store_and_resume(served, tiny_checkpoint, tmp_path):
    from doitray.eval.evaluate import evaluate_and_store
    from doitray.eval.suites import from_records
    from doitray.store import SCHEMAS, ResultsStore

    suite = from_records("small", small_suite_records(), "test", max_tokens=8)
    store = ResultsStore(str(tmp_path / "study"))
    kw = dict(template="doit", cell_id="cell-a", checkpoint="epoch-1", step=5, epoch=1.0, engine=served)
    res = evaluate_and_store(store, tiny_checkpoint, [suite], **kw)
    preds, scores = store.read("predictions"), store.read("scores")
    assert list(scores.columns) == SCHEMAS["scores"].names
    assert len(preds) == len(suite.records) and set(preds["item_id"]) == {r["id"] for r in suite.records}
    # every item answered through the deployment: no engine errors
    assert preds["error"].isna().all(), preds[preds["error"].notna()][["item_id", "error"]].to_dict("records")
    abilities = {r["ability"] for r in suite.records}
    assert sorted(scores["ability"]) == sorted(abilities | {"overall"})
    assert scores.groupby(["checkpoint", "ability"]).size().max() == 1  # one row per (checkpoint, ability)
    assert ((scores["value"] >= 0) & (scores["value"] <= 1)).all()
    rank = preds[preds["item_id"] == "cw-1"].iloc[0]
    assert len(eval(rank["prediction"])) == 3 and rank["chance"] == pytest.approx(1 / 3)
    choice = preds[preds["item_id"] == "biology-1"].iloc[0]
    assert choice["parsed"] in {"A", "B", "C", "D"} or choice["parsed"].endswith("(logits)")
    assert len(res.scores) == len(scores)
    again = evaluate_and_store(store, tiny_checkpoint, [suite], **kw)  # resume: already scored, skipped
    assert again.predictions == [] and len(store.read("scores")) == len(scores)


def test_served_logprobs_match_hf_forward(served, tiny_checkpoint):
    """The deployment's losses and first-token letter log-probs equal a plain HF forward of the same weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from doitray.data.templates import get_template

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, torch_dtype=torch.float32).eval()
    t = get_template("doit")
    prompt = t.prompt_ids(tok, [{"role": "user", "content": "What is 3 plus 4?"}])
    cont = t.continuation_ids(tok, "3 plus 4 is 7.")
    ids = prompt + cont
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    want = -sum(logp[i - 1, ids[i]].item() for i in range(len(prompt), len(ids))) / len(cont)
    got = served.score([(ids, len(prompt))])[0]
    assert got["n"] == len(cont) and got["loss"] == pytest.approx(want, rel=2e-3, abs=2e-3)
    letters = [t.continuation_ids(tok, L)[0] for L in "ABCD"]
    gen = served.generate([prompt], max_tokens=2, letter_ids=[letters])[0]["outputs"][0]
    for tid in letters:
        assert gen["letter_logprobs"][str(tid)] == pytest.approx(logp[len(prompt) - 1, tid].item(), abs=2e-3)
    # greedy: the first generated token is the argmax of the HF logits
    assert gen["token_ids"][0] == logp[len(prompt) - 1].argmax().item()


def test_second_checkpoint_served_at_once_and_torn_down(served, tiny_checkpoint, tiny_tokenizer_dir, tmp_path):
    """A second checkpoint gets its own deployment beside the first, which is deleted afterwards."""
    from ray import serve

    from evalkit import build_tiny_checkpoint
    from doitray.eval.evaluate import evaluate_checkpoint
    from doitray.eval.suites import from_records

    other = build_tiny_checkpoint(tiny_tokenizer_dir, tmp_path / "hf2", seed=1)
    before = set(serve.status().applications)
    suite = from_records("tiny", small_suite_records()[:3], "test", max_tokens=4)
    res = evaluate_checkpoint(other, [suite], template="doit", cell_id="cell-b", checkpoint="epoch-2",
                              engine_options={"max_model_len": 512})
    assert {p["checkpoint"] for p in res.predictions} == {"epoch-2"} and all(p["error"] is None for p in res.predictions)
    assert set(serve.status().applications) == before  # its app is gone; the shared one still runs
    assert served.app_name in before


def test_judge_plumbing_records_the_judge(served, tiny_checkpoint):
    """Judge items go through a judge deployment (here the same tiny model); the judge id is recorded."""
    import contextlib

    from doitray.data.templates import get_template
    from doitray.eval.evaluate import JudgeConfig, infer, items_of, run_judge, score
    from doitray.eval.suites import from_records
    from transformers import AutoTokenizer

    recs = [_r(i, "general", f"Say something about {i}.", "ok") for i in range(2)]
    items = items_of([from_records("mt", recs, "test", max_tokens=8)])
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    outs = infer(items, served, tok, get_template("doit"))
    assert all(o.text is not None for o in outs)
    seen = []

    def factory(hf_dir, options):
        seen.append(hf_dir)
        return contextlib.nullcontext(served)

    judge_id = run_judge(items, outs, JudgeConfig(hf_dir=tiny_checkpoint, template="doit", judge_id="tiny-judge", n=2),
                         factory)
    assert judge_id == "tiny-judge" and seen == [tiny_checkpoint]
    res = score(items, outs, cell_id="c", checkpoint="k", judge_id=judge_id)
    assert {p["metric"] for p in res.predictions} == {"judge:tiny-judge"}
    # a random judge writes no "[[r]]": each item is kept as failed with the reason, never dropped
    assert all(p["error"] == "no judge rating could be parsed" or 0 <= p["score"] <= 1 for p in res.predictions)
    assert {r["ability"] for r in res.scores} == {"general", "overall"}


def test_shared_engine_loads_each_checkpoint_in_place(served, tiny_checkpoint, tiny_tokenizer_dir, tmp_path):
    """One shared replica serves two checkpoints of the same shape, each with its own weights."""
    from ray import serve
    from transformers import AutoTokenizer

    from evalkit import build_tiny_checkpoint
    from doitray.data.templates import get_template
    from doitray.eval.engine import ServeEngine, close_shared_engines

    other = build_tiny_checkpoint(tiny_tokenizer_dir, tmp_path / "hf-other", seed=1)
    tok, t = AutoTokenizer.from_pretrained(tiny_checkpoint), get_template("doit")
    prompt = t.prompt_ids(tok, [{"role": "user", "content": "What is 3 plus 4?"}])
    seqs = [(prompt + t.continuation_ids(tok, "3 plus 4 is 7."), len(prompt))]
    opts = {"max_model_len": 512, "dtype": "float32", "shared": True, "shared_dir": str(tmp_path / "engines")}
    before = set(serve.status().applications)
    with ServeEngine(tiny_checkpoint, opts) as a:
        loss_a = a.score(seqs)[0]["loss"]
    with ServeEngine(other, opts) as b:
        loss_b = b.score(seqs)[0]["loss"]
    with ServeEngine(tiny_checkpoint, opts) as a_again:
        loss_a_again = a_again.score(seqs)[0]["loss"]
    assert a.app_name == b.app_name == a_again.app_name  # one replica, kept up between checkpoints
    assert set(serve.status().applications) - before == {a.app_name}
    with ServeEngine(other, {"max_model_len": 512, "dtype": "float32"}) as fresh:
        loss_b_fresh = fresh.score(seqs)[0]["loss"]
    assert loss_a == pytest.approx(served.score(seqs)[0]["loss"], abs=1e-4)
    assert loss_a_again == pytest.approx(loss_a, abs=1e-4)
    assert loss_b == pytest.approx(loss_b_fresh, abs=1e-4) and abs(loss_b - loss_a) > 1e-3
    assert close_shared_engines() == 1 and set(serve.status().applications) == before


def test_eval_run_command_serves_a_checkpoint_at_its_own_length(ray_local, tiny_checkpoint, tmp_path, capsys):
    """``doitray eval run`` on an export whose max_position_embeddings (1024) is below the engine's default (2048):
    served at the checkpoint's own length (vLLM refuses a longer one), the generated suite's test items scored."""
    import pandas as pd

    from doitray.cli import main
    from doitray.data.synthetic import generate_suite

    suite = generate_suite(tmp_path / "suite", train=2, valid=2, test=2, synthetic=0)
    out = tmp_path / "scores"
    assert main(["eval", "run", tiny_checkpoint, str(suite), "--format", "doit", "--split", "test",
                 "--out", str(out)]) == 0
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(pd.read_parquet(out / "predictions.parquet")) == 20  # 2 test items of each of the ten abilities
    per_ability = scores[scores["ability"] != "overall"]
    assert len(per_ability) == 10 and (per_ability["n"] == 2).all() and "overall" in set(scores["ability"])
    assert "overall" in capsys.readouterr().out
