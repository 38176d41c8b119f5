"""One optimizer step of a Train worker (gradient accumulation over its micro-batches), and valid loss."""
from __future__ import annotations

import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from doitray.train import data as D
from doitray.train import fsdp
from doitray.train.settings import lr_factor
from doitray.train.setup import Worker


def peak_memory(device: torch.device) -> int:
    """Peak bytes: CUDA allocations on a GPU, the process's max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def to_device(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}


def loss_sum(model, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the loss tokens of a micro-batch (fp32 log-softmax)."""
    out = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False)
    tgt = b["targets"]
    logits = out.logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                           ignore_index=D.IGNORE_INDEX, reduction="sum")


def micro_arrays(data: D.PackedArrays, idx: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    """The model inputs and shifted targets of packed rows ``idx`` (-1: a padding row)."""
    b = D.gather(data, idx, pad_id)
    return {"input_ids": b["input_ids"], "position_ids": b["position_ids"],
            "targets": D.shifted_targets(b["labels"], b["position_ids"])}


@torch.no_grad()
def valid_loss(model, data: D.PackedArrays, micro_batch: int, rank: int, world: int, device, pad_id: int) -> float:
    """Mean next-token loss over the loss tokens of ``data`` (rows split over ranks)."""
    model.eval()
    n = len(data)
    per_round = micro_batch * world
    rows = np.arange(-(-n // per_round) * per_round)
    rows[rows >= n] = -1
    total = count = 0.0
    for mb in D.rank_micro_batches(rows, micro_batch, rank, world):
        b = to_device(micro_arrays(data, mb, pad_id), device)
        total += float(loss_sum(model, b))
        count += float((b["targets"] != D.IGNORE_INDEX).sum())
    fsdp.reshard_all(model)
    model.train()
    total, count = fsdp.all_reduce_sum([total, count], device)
    return total / max(count, 1.0)


def train_step(w: Worker, step: int) -> dict:
    """Run optimizer step ``step`` (0-based) on the seeded global batch; returns its metrics."""
    s, model, opt = w.s, w.model, w.opt
    t0 = time.perf_counter()
    lr = s.lr * lr_factor(step, w.total, s)
    for g in opt.param_groups:
        g["lr"] = lr
    rows = D.global_batch_rows(len(w.train), s.global_batch, s.seed, step)
    n_tok = D.count_loss_tokens(w.train, rows)
    micro = D.rank_micro_batches(rows, s.micro_batch, w.rank, w.ws)
    assert len(micro) == w.accum
    wait = 0.0
    total = 0.0
    for i, mb in enumerate(micro):
        if s.grad_sync == "step":
            last = i == len(micro) - 1
            model.set_requires_gradient_sync(last)      # accumulate unsharded; one reduce-scatter per step
            model.set_reshard_after_backward(last)      # and keep the gathered parameters until then
        tw = time.perf_counter()
        b = to_device(micro_arrays(w.train, mb, w.pad_id), w.device)
        wait += time.perf_counter() - tw
        l_sum = loss_sum(model, b)
        # global mean over loss tokens; FSDP averages gradients over ranks, hence * ws
        (l_sum * (w.ws / max(n_tok, 1))).backward()
        total += float(l_sum.detach())
    gnorm = None
    if s.grad_clip:
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        gnorm = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
    opt.step()
    opt.zero_grad(set_to_none=True)
    (loss_total,) = fsdp.all_reduce_sum([total], w.device)
    done = step + 1
    dt = time.perf_counter() - t0
    tokens = int((rows >= 0).sum()) * s.seq_len
    metrics = {"step": done, "epoch": (done - 1) // w.spe + 1, "epoch_progress": done / w.spe,
               "train_loss": loss_total / max(n_tok, 1), "lr": lr, "grad_norm": gnorm, "step_time_s": dt,
               "data_wait_s": wait, "tokens_per_s": tokens / dt, "peak_memory_bytes": peak_memory(w.device),
               "world_size": w.ws, "rank": w.rank, "time": time.time()}
    if w.peak_flops:
        metrics["mfu"] = w.flops_per_token * tokens / dt / (w.peak_flops * w.ws)
    return metrics
