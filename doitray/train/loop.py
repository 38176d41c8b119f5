"""``train_loop_per_worker``: the FSDP2 SFT loop run by every Ray Train worker (Train V2).

Config keys (built by ``doitray.train.stage``): ``source`` (ModelSource dict), ``init_hf_dir``,
``settings`` (TrainSettings), ``policy`` (CheckpointPolicy), ``export_root`` (storage URI),
``generation`` (generation-config fields), ``has_valid``, ``cache_dir``, and test hooks ``fail_at_step``
/ ``fail_marker`` / ``fail_rank`` (a worker exits once after that step; env ``DOITRAY_FAIL_AT_STEP``
does the same) and ``stop_after_steps`` (checkpoint and stop early, as if preempted).
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from doitray.train import data as D
from doitray.train import fsdp
from doitray.train.settings import CheckpointPolicy, TrainSettings, lr_factor
from doitray.train.storage import join, upload_dir, write_json

SYNC = "sync"  # marks a report that only waits for the previous one to be taken (no metrics)

# dense bf16 peak FLOP/s per GPU, for MFU
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _optimizer(model, s: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]   # biases and norms, as HF Trainer does
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=tuple(s.betas), eps=s.eps, foreach=False)


def _to(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}


def _loss_sum(model, b: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False)
    tgt = b["targets"]
    logits = out.logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                           ignore_index=D.IGNORE_INDEX, reduction="sum")


def _micro(data: D.PackedArrays, idx: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    b = D.gather(data, idx, pad_id)
    return {"input_ids": b["input_ids"], "position_ids": b["position_ids"],
            "targets": D.shifted_targets(b["labels"], b["position_ids"])}


@torch.no_grad()
def evaluate(model, data: D.PackedArrays, micro_batch: int, rank: int, world: int, device, pad_id: int) -> float:
    """Mean next-token loss over the loss tokens of ``data`` (rows split over ranks)."""
    model.eval()
    n = len(data)
    per_round = micro_batch * world
    rows = np.arange(-(-n // per_round) * per_round)
    rows[rows >= n] = -1
    total = count = 0.0
    for mb in D.rank_micro_batches(rows, micro_batch, rank, world):
        b = _to(_micro(data, mb, pad_id), device)
        total += float(_loss_sum(model, b))
        count += float((b["targets"] != D.IGNORE_INDEX).sum())
    fsdp.reshard_all(model)
    model.train()
    total, count = fsdp.all_reduce_sum([total, count], device)
    return total / max(count, 1.0)


def _maybe_fail(cfg: dict, step: int, rank: int) -> None:
    at = cfg.get("fail_at_step") or os.environ.get("DOITRAY_FAIL_AT_STEP")
    marker = cfg.get("fail_marker") or os.environ.get("DOITRAY_FAIL_MARKER")
    fail_rank = cfg.get("fail_rank")
    if fail_rank is None:
        fail_rank = _ws() - 1
    if not at or int(at) != step or rank != int(fail_rank):
        return
    if marker:
        if os.path.exists(marker):
            return
        with open(marker, "w") as f:
            f.write(f"killed rank {rank} after step {step}\n")
    os._exit(17)   # a hard crash: no exception handling, no cleanup


def _load_data(cfg: dict) -> tuple[D.PackedArrays, D.PackedArrays | None]:
    """Every packed row of the stage's (unsplit) Ray Datasets, in file order."""
    import ray.train

    train = D.read_iterator(ray.train.get_dataset_shard("train"))
    valid = D.read_iterator(ray.train.get_dataset_shard("valid")) if cfg.get("has_valid") else None
    return train, valid


def _ws() -> int:
    import ray.train
    return ray.train.get_context().get_world_size()


def train_loop_per_worker(cfg: dict) -> dict:
    import ray.train
    import ray.train.torch
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoTokenizer

    s = TrainSettings(**cfg["settings"])
    policy = CheckpointPolicy(**cfg["policy"])
    ctx = ray.train.get_context()
    ws, rank = ctx.get_world_size(), ctx.get_world_rank()
    device = ray.train.torch.get_device()
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    mesh = init_device_mesh(device.type, (ws,), mesh_dim_names=("dp",))
    bf16 = s.precision == "bf16" or (s.precision == "auto" and device.type == "cuda")
    export_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        s.export_dtype, torch.bfloat16 if bf16 else torch.float32)

    t_load = time.perf_counter()
    train, valid = _load_data(cfg)
    data_s = time.perf_counter() - t_load
    if train.seq_len != s.seq_len:
        raise ValueError(f"packed data has seq_len {train.seq_len}, settings.seq_len is {s.seq_len}")
    source = cfg["source"]
    tok_dir = source["tokenizer_dir"]
    pad_id = AutoTokenizer.from_pretrained(tok_dir).pad_token_id or 0
    model = fsdp.build_sharded_model(source, mesh, device, seed=s.seed, bf16=bf16, ac=s.activation_checkpointing,
                                     init_hf_dir=cfg.get("init_hf_dir"), reshard_after_forward=s.reshard_after_forward)
    arch = [c.__name__ for c in type(model).__mro__ if c.__name__.endswith("ForCausalLM")
            and not c.__name__.startswith("FSDP")][:1]
    model.config.architectures = arch
    n_params = sum(p.numel() for p in model.parameters())
    opt = _optimizer(model, s)
    accum = s.accum_steps(ws)
    spe, total = s.steps_per_epoch(len(train)), s.total_steps(len(train))
    start = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            fsdp.load_dcp(model, opt, d)
            meta = json.loads(open(os.path.join(d, "meta.json")).read())
        if meta.get("settings_key") != s.key():
            raise ValueError("the run's latest checkpoint was written with different settings; use a new run name")
        start = int(meta["step"])
    setup_s = time.perf_counter() - t_load
    stop_after = cfg.get("stop_after_steps")
    peak = _peak_flops(device)
    cfg_m = model.config
    flops_per_token = 6 * n_params + 12 * cfg_m.num_hidden_layers * cfg_m.hidden_size * s.seq_len
    last_loss = float("nan")
    first_report = True
    history: list[dict] = []      # per-step metrics not reported yet
    model.train()
    for step in range(start, total):
        t0 = time.perf_counter()
        lr = s.lr * lr_factor(step, total, s)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = D.global_batch_rows(len(train), s.global_batch, s.seed, step)
        n_tok = D.count_loss_tokens(train, rows)
        micro = D.rank_micro_batches(rows, s.micro_batch, rank, ws)
        assert len(micro) == accum
        wait = 0.0
        loss_sum = 0.0
        for i, mb in enumerate(micro):
            if s.grad_sync == "step":
                last = i == len(micro) - 1
                model.set_requires_gradient_sync(last)      # accumulate unsharded; one reduce-scatter per step
                model.set_reshard_after_backward(last)      # and keep the gathered parameters until then
            tw = time.perf_counter()
            b = _to(_micro(train, mb, pad_id), device)
            wait += time.perf_counter() - tw
            l_sum = _loss_sum(model, b)
            # global mean over loss tokens; FSDP averages gradients over ranks, hence * ws
            (l_sum * (ws / max(n_tok, 1))).backward()
            loss_sum += float(l_sum.detach())
        gnorm = None
        if s.grad_clip:
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            gnorm = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
        opt.step()
        opt.zero_grad(set_to_none=True)
        (loss_total,) = fsdp.all_reduce_sum([loss_sum], device)
        last_loss = loss_total / max(n_tok, 1)
        done = step + 1
        dt = time.perf_counter() - t0
        tokens = int((rows >= 0).sum()) * s.seq_len
        metrics = {"step": done, "epoch": (done - 1) // spe + 1, "epoch_progress": done / spe,
                   "train_loss": last_loss, "lr": lr, "grad_norm": gnorm, "step_time_s": dt,
                   "data_wait_s": wait, "tokens_per_s": tokens / dt, "peak_memory_bytes": _peak_memory(device),
                   "world_size": ws, "rank": rank, "time": time.time()}
        if peak:
            metrics["mfu"] = flops_per_token * tokens / dt / (peak * ws)
        if first_report:
            metrics.update({f"shard_{k}": v for k, v in fsdp.local_shard_stats(model).items()})
            metrics["setup_s"] = setup_s
            metrics["data_load_s"] = data_s
            metrics["resumed_from_step"] = start
            first_report = False
        final = done == total
        stopping = stop_after is not None and done >= int(stop_after) and not final
        if policy.is_checkpoint_step(done, spe, total) or stopping:
            _checkpoint(cfg, model, opt, s, policy, {**metrics, "history": history}, valid, device, rank, ws, pad_id,
                        tok_dir, export_dtype, final=final, spe=spe)
            history = []
        elif done % s.log_every == 0:
            # the earlier steps ride along: Train V2 holds one report per worker until its controller
            # polls (every 2 s), so a report per step would stall fast steps
            ray.train.report({**metrics, "history": history})
            history = []
        else:
            history.append(metrics)
        _maybe_fail(cfg, done, rank)
        if stopping:
            break
    return {"final_step": done if total > start else start, "train_loss": last_loss, "world_size": ws}


def _checkpoint(cfg, model, opt, s, policy, metrics, valid, device, rank, ws, pad_id, tok_dir, export_dtype, *,
                final: bool, spe: int) -> None:
    import ray.train

    step = metrics["step"]
    name = f"step{step:07d}"
    if valid is not None:
        metrics["valid_loss"] = evaluate(model, valid, s.micro_batch, rank, ws, device, pad_id)
    d = tempfile.mkdtemp(prefix="doitray-ckpt-")
    fsdp.save_dcp(model, opt, d)
    export = final or policy.export == "all"
    hf_uri = join(cfg["export_root"], name, "hf") if export else None
    info = {"name": name, "step": step, "epoch": metrics["epoch"], "epoch_end": step % spe == 0 or final,
            "path": join(cfg["run_uri"], name), "hf_path": hf_uri, "valid_loss": metrics.get("valid_loss"),
            "train_loss": metrics["train_loss"], "final": final}
    if export:
        full = fsdp.full_state_dict(model)        # collective: all ranks
        if rank == 0:
            tmp = tempfile.mkdtemp(prefix="doitray-hf-")
            fsdp.write_hf(full, model.config, tok_dir, tmp, dtype=export_dtype, generation=cfg.get("generation"))
            upload_dir(tmp, hf_uri)
            shutil.rmtree(tmp, ignore_errors=True)
        del full
    if rank == 0:
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({**info, "world_size": ws, "settings_key": s.key()}, f)
        write_json(join(cfg["export_root"], name, "info.json"), info)
    fsdp.barrier()
    metrics["checkpoint"] = name
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=name,
                     delete_local_checkpoint_after_upload=True)
    if not final:
        # Each worker holds one report until the controller polls it (every 2 s): this second one returns
        # only once the checkpoint's report was taken, so a crash in the next steps resumes from it.
        ray.train.report({"step": step, SYNC: True})
