"""Fast tests: settings and schedules, the deterministic batch order, reading packed data.

(Strategies as stages are tested on the live path: tests/study/test_stages.py, tests/study/test_staged_study.py.)"""
import numpy as np
import pydantic
import pytest

from doitray.train import data as D
from doitray.train.settings import CheckpointPolicy, TrainSettings, lr_factor


def test_paper_presets():
    d = TrainSettings.preset("doit")
    assert (d.lr, d.global_batch, d.epochs, d.seq_len, d.weight_decay, d.betas) == (1e-5, 64, 15, 2048, 0.1, (0.9, 0.95))
    m = TrainSettings.preset("dmt")
    assert (m.lr, m.epochs, m.warmup_ratio) == (2e-5, 3, 0.03)
    with pytest.raises(ValueError, match="allowed: doit, dmt, tiny"):
        TrainSettings.preset("gpt")
    with pytest.raises(pydantic.ValidationError, match="schedule"):
        TrainSettings(schedule="exp")
    with pytest.raises(pydantic.ValidationError, match="multiple of micro_batch"):
        TrainSettings(global_batch=10, micro_batch=4)


def test_global_batch_is_independent_of_workers():
    s = TrainSettings(global_batch=64, micro_batch=8)
    assert [s.accum_steps(w) * w * s.micro_batch for w in (1, 2, 4, 8)] == [64] * 4
    with pytest.raises(ValueError, match="not divisible by 3 workers"):
        s.accum_steps(3)
    assert s.steps_per_epoch(10000) == 157 and s.total_steps(10000) == 157   # ceil, as DoIT


@pytest.mark.parametrize("schedule", ["linear", "cosine", "polynomial", "constant"])
def test_schedules(schedule):
    s = TrainSettings(lr=1e-3, schedule=schedule, end_lr=1e-4, warmup_ratio=0.1, power=2.0)
    f = [lr_factor(i, 100, s) * s.lr for i in range(100)]
    assert f[0] == pytest.approx(1e-4) and f[9] == pytest.approx(1e-3)          # warm-up over 10 steps
    if schedule == "constant":
        assert f[-1] == pytest.approx(1e-3)
    else:
        assert all(a >= b - 1e-12 for a, b in zip(f[10:], f[11:])) and 1e-4 <= f[-1] < 1.2e-4


def test_preset_lr_override_scales_the_end_lr_and_never_rises():
    tiny = TrainSettings.preset("tiny")
    s = TrainSettings.preset("tiny", lr=5e-5, warmup_ratio=0.0)
    assert s.end_lr == pytest.approx(5e-5 * tiny.end_lr / tiny.lr)  # the preset's end/peak ratio kept
    f = [lr_factor(i, 20, s) * s.lr for i in range(20)]
    assert max(f) == pytest.approx(5e-5) and all(a >= b for a, b in zip(f, f[1:]))
    assert TrainSettings.preset("tiny", lr=5e-5, end_lr=0.0).end_lr == 0.0  # an explicit end lr is kept
    with pytest.raises(pydantic.ValidationError, match=r"end_lr \(0.001\) must not exceed lr \(0.0001\)"):
        TrainSettings(lr=1e-4, end_lr=1e-3)


def test_checkpoint_policy():
    ep = CheckpointPolicy(every="epoch")
    assert [s for s in range(1, 10) if ep.is_checkpoint_step(s, 3, 9)] == [3, 6, 9]
    st = CheckpointPolicy(every="steps", every_n_steps=4)
    assert [s for s in range(1, 10) if st.is_checkpoint_step(s, 3, 9)] == [4, 8, 9]
    assert [s for s in range(1, 10) if CheckpointPolicy(every="last").is_checkpoint_step(s, 3, 9)] == [9]
    with pytest.raises(pydantic.ValidationError, match="every_n_steps"):
        CheckpointPolicy(every="steps")


def test_batch_order_deterministic_and_world_size_free():
    n, g = 21, 8
    steps = [D.global_batch_rows(n, g, 0, s) for s in range(6)]
    # an epoch is ceil(21/8)=3 steps; each row exactly once per epoch; filler rows (-1) complete the last batch
    ep0 = np.concatenate(steps[:3])
    assert sorted(ep0[ep0 >= 0].tolist()) == list(range(n)) and (ep0 < 0).sum() == 3
    assert not np.array_equal(steps[0], steps[3])                      # reshuffled each epoch
    assert np.array_equal(D.global_batch_rows(n, g, 0, 4), steps[4])    # resumable: a pure function of step
    for w in (1, 2, 4):
        parts = [D.rank_micro_batches(steps[0], 2, r, w) for r in range(w)]
        assert sorted(np.concatenate([m for p in parts for m in p]).tolist()) == sorted(steps[0].tolist())
        assert len({len(p) for p in parts}) == 1


def test_shifted_targets_mask_example_boundaries():
    labels = np.array([[-100, 5, 6, -100, 7, 8]])
    pos = np.array([[0, 1, 2, 0, 1, 2]])
    assert D.shifted_targets(labels, pos).tolist() == [[5, 6, -100, 7, 8, -100]]
    labels2 = np.array([[-100, 5, 6, 9, 7, 8]])     # even a trainable label at a boundary is not predicted
    assert D.shifted_targets(labels2, pos).tolist() == [[5, 6, -100, 7, 8, -100]]


def test_from_batches_accepts_list_and_tensor_columns():
    rows = [np.arange(4, dtype=np.int32), np.arange(4, 8, dtype=np.int32)]
    obj = np.empty(2, dtype=object)
    obj[:] = rows
    a = D.from_batches([{"input_ids": obj, "labels": obj, "position_ids": obj}])
    b = D.from_batches([{"input_ids": np.stack(rows), "labels": np.stack(rows), "position_ids": np.stack(rows)}])
    assert np.array_equal(a.input_ids, b.input_ids) and a.seq_len == 4
    with pytest.raises(ValueError, match="position_ids"):
        D.from_batches([{"input_ids": obj, "labels": obj}])


def test_read_packed_list_and_tensor_columns(tmp_path, tok):
    import ray.data.extensions  # noqa: F401

    from trainkit import arithmetic_messages, write_packed

    msgs = arithmetic_messages(40, seed=3)
    a = D.read_path(write_packed(tmp_path / "a", tok, msgs, 64))
    b = D.read_path(write_packed(tmp_path / "b", tok, msgs, 64, tensor_columns=True))
    assert a.input_ids.shape == b.input_ids.shape and a.seq_len == 64
    for c in ("input_ids", "labels", "position_ids"):
        assert np.array_equal(getattr(a, c), getattr(b, c))
    assert (a.position_ids[:, 0] == 0).all() and (a.labels == -100).any()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .parquet files"):
        D.read_path(str(tmp_path / "empty"))
