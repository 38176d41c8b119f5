"""Ray Train + FSDP2 on CPU (2 gloo workers): learning, sharding, checkpoints, resume, recovery, reuse."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from trainkit import make_spec

pytestmark = pytest.mark.slow


def _series(res, metric):
    return {r["step"]: r["value"] for r in res.metrics if r["metric"] == metric}


def _weights(hf_dir):
    from safetensors.torch import load_file

    return load_file(os.path.join(hf_dir, "model.safetensors"))


def test_loss_falls_and_checkpoints_every_epoch(ref_run):
    spec, res = ref_run
    loss = _series(res, "train_loss")
    assert sorted(loss) == list(range(1, 17))                       # 30 rows / 8 → 4 steps x 4 epochs
    assert np.mean([loss[s] for s in (13, 14, 15, 16)]) < 0.6 * np.mean([loss[s] for s in (1, 2, 3)])
    valid = _series(res, "valid_loss")
    assert sorted(valid) == [4, 8, 12, 16] and valid[16] < 0.7 * valid[4]
    assert [c.step for c in res.checkpoints] == [4, 8, 12, 16] and [c.epoch for c in res.checkpoints] == [1, 2, 3, 4]
    assert all(c.hf_path and os.path.exists(os.path.join(c.hf_path, "model.safetensors")) for c in res.checkpoints)
    assert res.checkpoints[-1].final and res.final_hf_path == res.checkpoints[-1].hf_path
    for m in ("tokens_per_s", "step_time_s", "data_wait_s", "peak_memory_bytes", "lr", "grad_norm"):
        assert len(_series(res, m)) == 16 and all(v >= 0 for v in _series(res, m).values())
    # num_to_keep=2: only the last two DCP checkpoints remain for resume; every export is kept
    dcp_dirs = sorted(d for d in os.listdir(res.run_path) if d.startswith("step"))
    assert dcp_dirs == ["step0000012", "step0000016"]
    assert {f for f in os.listdir(os.path.join(res.run_path, "step0000016"))} >= {".metadata", "__0_0.distcp",
                                                                                   "__1_0.distcp", "meta.json"}


def test_fsdp2_really_shards(ref_run):
    _, res = ref_run
    st = res.shard_stats
    assert [s["rank"] for s in st] == [0, 1] and st[0]["pid"] != st[1]["pid"]
    full = st[0]["full_numel"]
    assert all(s["n_sharded"] == s["n_params"] for s in st)          # every parameter is split
    assert all(s["local_numel"] < 0.6 * full for s in st)
    assert sum(s["local_numel"] for s in st) == pytest.approx(full, rel=0.01)


def test_rerun_same_spec_is_reused(ref_run):
    from doitray.train.stage import run_stage

    spec, res = ref_run
    again = run_stage(spec)
    assert again.reused and again.final_hf_path == res.final_hf_path and again.metrics == res.metrics


def test_killed_worker_recovers_without_losing_or_repeating_steps(ref_run, train_root, tiny_tokenizer_dir, packed):
    from doitray.train.stage import run_stage

    spec, ref = ref_run
    marker = train_root / "killed.txt"
    res = run_stage(make_spec(train_root, tiny_tokenizer_dir, packed, run_name="killed", max_failures=1,
                              fail_at_step=6, fail_marker=str(marker)))
    assert marker.exists()                                          # rank 1 really died after step 6
    assert res.resumed_from == [0, 4]                                # restarted from the epoch-1 checkpoint
    ref_loss, loss = _series(ref, "train_loss"), _series(res, "train_loss")
    assert sorted(loss) == list(range(1, 17))
    for s in range(1, 17):
        assert loss[s] == pytest.approx(ref_loss[s], rel=1e-5, abs=1e-6)
    a, b = _weights(ref.final_hf_path), _weights(res.final_hf_path)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)


def test_two_worker_checkpoint_resumes_on_one_worker(ref_run, train_root, tiny_tokenizer_dir, packed):
    from doitray.train.stage import run_stage

    _, ref = ref_run
    first = run_stage(make_spec(train_root, tiny_tokenizer_dir, packed, run_name="resume", stop_after_steps=8))
    assert first.final_hf_path is None and max(_series(first, "train_loss")) == 8
    res = run_stage(make_spec(train_root, tiny_tokenizer_dir, packed, run_name="resume", num_workers=1))
    assert res.resumed_from[-1] == 8 and [s["rank"] for s in res.shard_stats] == [0]
    ref_loss, loss = _series(ref, "train_loss"), _series(res, "train_loss")
    for s in range(9, 17):                                           # the trajectory continues (DCP resharded 2 → 1)
        assert loss[s] == pytest.approx(ref_loss[s], rel=1e-4)
    a, b = _weights(ref.final_hf_path), _weights(res.final_hf_path)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)


def test_export_loads_in_transformers_and_generates_in_vllm(ref_run, tok):
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from doitray.data.templates import get_template

    _, res = ref_run
    d = res.final_hf_path
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["vocab_size"] == len(tok)
    gen = json.load(open(os.path.join(d, "generation_config.json")))
    assert tok.convert_tokens_to_ids("<eot>") in gen["eos_token_id"]
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    t = AutoTokenizer.from_pretrained(d)
    assert t.convert_tokens_to_ids("<assistant>") == tok.convert_tokens_to_ids("<assistant>")
    prompt = get_template("doit").prompt_ids(t, [{"role": "user", "content": "What is 3 plus 6?"}])
    with torch.no_grad():
        hf_out = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0][len(prompt):].tolist()
    assert "plus" in t.decode(hf_out)                                # it learned the answer's shape
    script = os.path.join(os.path.dirname(__file__), "vllm_generate.py")
    proc = subprocess.run([sys.executable, script, d, json.dumps(prompt)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stderr[-3000:]
    v_out = json.loads(line[len("RESULT "):])["token_ids"]
    n = min(4, len(hf_out))
    assert n >= 2 and v_out[:n] == hf_out[:n]
