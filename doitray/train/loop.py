"""``train_loop_per_worker``: the FSDP2 SFT loop run by every Ray Train worker (Train V2).

Set up (``setup``), step (``step``), checkpoint (``checkpoint``), with metrics reported in groups.
Config keys (built by ``doitray.train.stage``): ``source`` (ModelSource dict), ``init_hf_dir``,
``settings`` (TrainSettings), ``policy`` (CheckpointPolicy), ``export_root`` (storage URI),
``generation`` (generation-config fields), ``has_valid``, ``cache_dir``, and test hooks ``fail_at_step``
/ ``fail_marker`` / ``fail_rank`` (a worker exits once after that step; env ``DOITRAY_FAIL_AT_STEP``
does the same) and ``stop_after_steps`` (checkpoint and stop early, as if preempted).
"""
from __future__ import annotations

import os

from doitray.train import fsdp
from doitray.train.checkpoint import save_checkpoint
from doitray.train.setup import setup
from doitray.train.step import train_step
from doitray.tracking import worker_run


def _maybe_fail(cfg: dict, step: int, rank: int, ws: int) -> None:
    at = cfg.get("fail_at_step") or os.environ.get("DOITRAY_FAIL_AT_STEP")
    marker = cfg.get("fail_marker") or os.environ.get("DOITRAY_FAIL_MARKER")
    fail_rank = cfg.get("fail_rank")
    if fail_rank is None:
        fail_rank = ws - 1
    if not at or int(at) != step or rank != int(fail_rank):
        return
    if marker:
        if os.path.exists(marker):
            return
        with open(marker, "w") as f:
            f.write(f"killed rank {rank} after step {step}\n")
    os._exit(17)   # a hard crash: no exception handling, no cleanup


def train_loop_per_worker(cfg: dict) -> dict:
    import ray.train

    w = setup(cfg)
    s = w.s
    stop_after = cfg.get("stop_after_steps")
    last_loss = float("nan")
    first_report = True
    history: list[dict] = []      # per-step metrics not reported yet
    done = w.start
    track = worker_run(cfg.get("tracking") if w.rank == 0 else None)  # the cell's tracked run, from rank 0
    w.model.train()
    for step in range(w.start, w.total):
        metrics = train_step(w, step)
        done, last_loss = metrics["step"], metrics["train_loss"]
        if first_report:
            metrics.update({f"shard_{k}": v for k, v in fsdp.local_shard_stats(w.model).items()})
            metrics.update(setup_s=w.setup_s, data_load_s=w.data_s, resumed_from_step=w.start)
            first_report = False
        final = done == w.total
        stopping = stop_after is not None and done >= int(stop_after) and not final
        if w.policy.is_checkpoint_step(done, w.spe, w.total) or stopping:
            report = {**metrics, "history": history}
            save_checkpoint(w, report, final=final)   # adds the valid loss
            track.log_report(report)
            history = []
        elif done % s.log_every == 0:
            # the earlier steps ride along: Train V2 holds one report per worker until its controller
            # polls (``stage.POLL_INTERVAL_S``), so a report per step would stall fast steps
            ray.train.report({**metrics, "history": history})
            track.log_report({**metrics, "history": history})
            history = []
        else:
            history.append(metrics)
        _maybe_fail(cfg, done, w.rank, w.ws)
        if stopping:
            break
    track.close()
    return {"final_step": done, "train_loss": last_loss, "world_size": w.ws}
