"""Strategies run as chained stages; DMT cells with different k train stage 1 once."""
from __future__ import annotations

import pytest

from trainkit import SEQ, arithmetic_messages, scale_packed, union_packed, write_packed

pytestmark = pytest.mark.slow


def test_dmt_cells_share_stage_one(ray_local, tmp_path, tok, tiny_tokenizer_dir, packed):
    from doitray.train.settings import CheckpointPolicy, TrainSettings
    from doitray.train.stage import StageSpec, run_stage, stage_key
    from doitray.train.strategies import expand, run_strategy

    code = write_packed(tmp_path / "minus", tok, arithmetic_messages(64, seed=5, ops="-"), SEQ)
    general = write_packed(tmp_path / "general", tok, arithmetic_messages(32, seed=6, ops="+-"), SEQ)
    specialists = {"math": packed["train"], "code": code}
    settings = TrainSettings.preset("tiny", seq_len=SEQ, max_steps=2, global_batch=4, micro_batch=2)

    def make(plan, init_from):
        return StageSpec(name=plan.name, model="tiny-xs", tokenizer_dir=tiny_tokenizer_dir, train_data=plan.data,
                         init_from=init_from, settings=settings,
                         checkpoint=CheckpointPolicy(every="last", export="last"),
                         storage_path=str(tmp_path / "storage"), cache_dir=str(tmp_path / "cache"), num_workers=2)

    def cell(k):
        return expand("dmt", specialists=specialists, general=general, k=k,
                      union=lambda xs: union_packed(xs, tmp_path / "mix"),
                      scale=lambda r, kk: scale_packed(r, kk, tmp_path / "mix"))

    a, b = cell(1 / 4), cell(1 / 16)
    res_a = run_strategy(a, make)
    assert [r.reused for r in res_a] == [False, False]
    stage2 = make(a[1], res_a[0].final_hf_path)
    assert stage2.init_from == res_a[0].final_hf_path and res_a[1].final_hf_path
    # stage 2 started from stage 1's weights: its first loss is below stage 1's first loss
    first = lambda r: min((m for m in r.metrics if m["metric"] == "train_loss"), key=lambda m: m["step"])["value"]
    assert first(res_a[1]) < first(res_a[0])
    # cell b: the same stage 1 (same content key) is not trained again; its stage 2 is a different run
    res_b1 = run_stage(make(b[0], None))
    assert res_b1.reused and res_b1.final_hf_path == res_a[0].final_hf_path
    assert stage_key(make(b[1], res_b1.final_hf_path)) != stage_key(stage2)
