"""MT-Bench through real deployments: a tiny checkpoint answers both turns (Serve + vLLM on CPU) and a tiny judge
model, served as a second deployment by the same engine code, grades each turn with FastChat's prompts.

The tiny judge is a random model: its "judgments" are noise and carry no ``[[n]]`` rating, so every judgment is
unparsable. What this checks is the plumbing: two turns asked, each turn's grading prompt served by the judge
deployment, unparsable judgments counted and the items not scored, and the part failing visibly (nothing scored
from a judge that cannot be read)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "assets" / "benchmarks" / "mt_bench" / "data"


def test_mt_bench_two_turns_and_a_served_judge(ray_local, tiny_checkpoint, tiny_tokenizer_dir, tmp_path):
    from ray import serve

    from evalkit import build_tiny_checkpoint
    from doitray.eval.benchmarks import JudgeSpec, SuiteSpec, build_benchmark
    from doitray.eval.evaluate import evaluate_checkpoint

    judge_dir = build_tiny_checkpoint(tiny_tokenizer_dir, tmp_path / "judge", seed=7)
    suite = build_benchmark(SuiteSpec(kind="mt_bench", path=str(DATA), judge=JudgeSpec(
        path=judge_dir, template="doit", max_tokens=16, engine={"max_model_len": 1024, "dtype": "float32"})))
    suite.max_tokens = 8
    before = set(serve.status().applications)
    res = evaluate_checkpoint(tiny_checkpoint, [suite], template="doit", cell_id="c", checkpoint="k",
                              engine_options={"max_model_len": 1024, "dtype": "float32"})
    preds = {p["item_id"]: p for p in res.predictions}
    assert set(preds) == {"mt_bench-81", "mt_bench-101", "mt_bench-111", "mt_bench-121"}
    for p in preds.values():
        turns = json.loads(p["prediction"])  # both turns answered, the second after the first
        assert isinstance(turns, list) and len(turns) == 2
        assert p["metric"] == f"judge:{judge_dir}"
        # a random judge: its judgments are counted (none parsable), the item is not scored
        assert p["error"] == "no judge rating could be parsed" or 0 <= p["score"] <= 1
    assert res.failures and res.failures[0].suite == "mt_bench" and res.failures[0].n_engine == 0
    assert set(serve.status().applications) <= before  # both deployments (checkpoint, judge) were torn down


# a chat template for the tiny judge (its tokenizer has none): the DoIT template's turns
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'assistant' %}<assistant>{% else %}<user>{% endif %}"
                 "{{ m['content'] }}<eot>{% endfor %}<assistant>")


def test_mt_bench_judged_by_an_openai_compatible_endpoint(ray_local, tiny_checkpoint, tiny_tokenizer_dir, tmp_path):
    """``judge: {url, model}`` against a real server: vLLM's OpenAI-compatible API server (``vllm serve``) on CPU
    serving the tiny judge. Every turn's grading prompt is answered by the server (a random model: the judgments
    are counted as unparsable, never an endpoint error); a server that is gone is a visible judge failure."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from evalkit import build_tiny_checkpoint
    from doitray.eval.benchmarks import JudgeSpec, SuiteSpec, build_benchmark
    from doitray.eval.evaluate import evaluate_checkpoint

    judge_dir = build_tiny_checkpoint(tiny_tokenizer_dir, tmp_path / "judge", seed=7)
    config = Path(judge_dir) / "config.json"  # FastChat's grading prompts with references pass 1,024 tokens here
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_position_embeddings": 4096}))
    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    port = _free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TORCHDYNAMO_DISABLE": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", judge_dir,
                               "--served-model-name", "tiny-judge", "--host", "127.0.0.1", "--port", str(port),
                               "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager",
                               "--chat-template", str(tmp_path / "chat.jinja")],
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-4000:]
                time.sleep(2)
        suite = build_benchmark(SuiteSpec(kind="mt_bench", path=str(DATA), judge=JudgeSpec(
            url=url, model="tiny-judge", max_tokens=16)))
        suite.max_tokens = 8
        res = evaluate_checkpoint(tiny_checkpoint, [suite], template="doit", cell_id="c", checkpoint="k",
                                  engine_options={"max_model_len": 1024, "dtype": "float32"})
        preds = {p["item_id"]: p for p in res.predictions}
        assert len(preds) == 4
        for p in preds.values():
            assert p["metric"] == "judge:tiny-judge"
            assert not (p["error"] or "").startswith("judge:"), p["error"]   # the server answered every turn
            assert p["error"] == "no judge rating could be parsed" or 0 <= p["score"] <= 1
        served = (tmp_path / "server.log").read_text().count("POST /v1/chat/completions")
        assert served == 2 * len(preds)                                      # two turns graded per question
    finally:
        server.terminate()
        server.wait(60)
    # the endpoint is gone: a request is an endpoint error (evaluate_checkpoint records it as the item's judge
    # failure, tests/eval/test_judge.py), not a judgment
    from doitray.eval.judge import JudgeConfig, ask_endpoint

    [reply] = ask_endpoint(JudgeConfig(url=url, model="tiny-judge", max_tokens=4), [[{"role": "user", "content": "hi"}]])
    assert "error" in reply and "Connection" in reply["error"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
