"""bench/gpu_check.py: its CPU mode end to end (without Ray importable), and its HF engine's semantics."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One CPU-mode run of the script's main(), in a python where ``import ray`` fails."""
    root = tmp_path_factory.mktemp("gpu_check")
    block = root / "noray" / "ray"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('ray is not installed on the GPU machine')\n")
    out = root / "out"
    env = {**os.environ, "PYTHONPATH": str(block.parent), "TOKENIZERS_PARALLELISM": "false"}
    code = f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import gpu_check; " \
           f"sys.exit(gpu_check.main(['--out', {str(out)!r}, '--device', 'cpu', '--work', {str(root / 'work')!r}]))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    summary = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else None
    return r, summary, out


@pytest.mark.timeout(600)
def test_cpu_mode_end_to_end_without_ray(cpu_run):
    r, s, out = cpu_run
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert s["ok"] is True
    assert s["mode"] == "cpu" and s["distributed"] == {"backend": "gloo", "world_size": 1}
    assert s["ray_imported"] is False and s["vllm_imported"] is False
    assert (out / "gpu_check.log").stat().st_size > 0
    assert "gpu_check  mode cpu" in r.stdout and "ray" in r.stdout

    z = gpu_check.CPU
    t = s["train"]
    assert t["status"] == "ok" and t["backend"] == "gloo" and t["activation_checkpointing"] is True
    assert t["accum"] == z.accum and t["global_batch"] == z.micro_batch * z.accum
    assert t["tokens_per_s"] > 0 and t["peak_memory_bytes"] > 0 and t["mfu"] is None   # MFU: GPU only
    assert t["checkpoint_step"] == z.warmup_steps + z.measure_steps
    assert len(t["losses"]) == t["steps_run"] == z.warmup_steps + z.measure_steps + z.continue_steps

    # the loss after DCP reload equals the loss of the run that went on without reloading
    res = s["resume"]
    assert res["status"] == "ok" and len(res["reloaded_losses"]) == z.continue_steps
    for a, b in zip(res["continued_losses"], res["reloaded_losses"]):
        assert b == pytest.approx(a, rel=1e-5)
    assert res["continued_losses"] == pytest.approx(t["losses"][-z.continue_steps:], abs=1e-5)

    e = s["export"]
    assert e["status"] == "ok" and e["dtype"] == "float32"
    assert e["logits_max_abs_diff"] <= e["tolerance"] and e["top1_agreement"] == 1.0
    assert e["nll_hf"] == pytest.approx(e["nll_sharded"], rel=1e-5)

    p = s["planner"]
    assert p["status"] == "ok"
    assert {(row["micro_batch"], row["activation_checkpointing"]) for row in p["rows"]} == \
        {(mb, ac) for mb in (2, 8) for ac in (True, False)}
    for row in p["rows"]:
        assert row["status"] == "ok" and row["plan_total_bytes"] > 0 and row["ratio"] > 0

    v = s["eval"]
    assert v["status"] == "ok" and v["items"] >= 3
    assert v["kinds"].get("rank", 0) > 0 and v["kinds"].get("letters", 0) > 0
    for key in ("device_fp32_vs_cpu", "device_bf16_vs_cpu"):
        c = v[key]
        assert c["n_choice_losses"] > 0 and c["n_letter_logprobs"] > 0
        assert c["choice_loss_max_abs_diff"] <= c["tolerance"]
        assert c["letter_logprob_max_abs_diff"] <= c["tolerance"]
    assert all(x is not None for x in v["overall_score"].values())

    assert s["ray"]["status"].startswith("not run: ray wheel ") and s["ray"]["status"].endswith("> 64 MiB budget")
    assert s["ray"]["wheel_bytes"] > 64 * 2 ** 20
    assert any("vLLM" in u for u in s["unmeasured"]) and any("tensor-parallel" in u for u in s["unmeasured"])


def test_hf_engine_matches_the_engine_contract(tmp_path, tiny_tokenizer_dir):
    """score = mean NLL of ids[start:] given the prefix; letters = log-softmax at the first generated token."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=1, num_key_value_heads=1, head_dim=64, max_position_embeddings=256)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
    eng = gpu_check.HFEngine(str(tmp_path / "m"), torch.device("cpu"), torch.float32, tok)
    ids = tok("What is 3 plus 4? 3 plus 4 is 7.")["input_ids"]
    start = 5
    with torch.no_grad():
        logits = eng.model(input_ids=torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    want = -sum(float(lp[i - 1, ids[i]]) for i in range(start, len(ids))) / (len(ids) - start)
    (got,) = eng.score([(ids, start)])
    assert got["loss"] == pytest.approx(want, rel=1e-5) and got["n"] == len(ids) - start

    letters = [tok.convert_tokens_to_ids(x) for x in ("A", "B")]
    (g,) = eng.generate([ids[:start]], max_tokens=3, letter_ids=[letters])
    first = lp[start - 1]
    o = g["outputs"][0]
    assert o["letter_logprobs"] == {str(t): pytest.approx(float(first[t]), abs=1e-5) for t in letters}
    assert o["token_ids"][0] == int(first.argmax()) and len(o["token_ids"]) <= 3
    assert eng.generate([ids], max_tokens=2, n=2, temperature=0.8)[0]["error"]


def test_table_reports_failed_and_skipped_parts():
    s = {"mode": "gpu", "env": {"device": "cuda:0", "device_name": "NVIDIA H200"}, "wall_s": 12.0, "ok": False,
         "train": {"status": "failed: OutOfMemoryError: CUDA out of memory"},
         "resume": {"status": "skipped: needs train"},
         "planner": {"status": "ok", "rows": [{"micro_batch": 8, "activation_checkpointing": False,
                                               "status": "oom: CUDA out of memory"}]},
         "ray": gpu_check.part_ray(), "unmeasured": gpu_check.UNMEASURED}
    text = gpu_check.table(s)
    assert "NOT OK" in text and "failed: OutOfMemoryError" in text and "skipped: needs train" in text
    assert "not run: ray wheel 75.6 MiB > 64 MiB budget" in text


def test_missing_module_stops_at_once_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "NEEDED", (*gpu_check.NEEDED, "no_such_module_xyz"))
    assert gpu_check.main(["--out", str(tmp_path), "--device", "cpu"]) == 2
    s = json.loads((tmp_path / "gpu_check.json").read_text())
    assert s["ok"] is False and "no_such_module_xyz" in s["status"] and "--wheels" in s["status"]
