"""Setting up one Train worker: settings, device mesh, data, the sharded model and optimizer, resume."""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from doitray.scratch import fetch
from doitray.train import data as D
from doitray.train import fsdp
from doitray.train.settings import CheckpointPolicy, TrainSettings

# dense bf16 peak FLOP/s per GPU, for MFU
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


@dataclass
class Worker:
    """Everything one worker's steps and checkpoints need."""

    cfg: dict
    s: TrainSettings
    policy: CheckpointPolicy
    rank: int
    ws: int
    device: torch.device
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    train: D.PackedArrays
    valid: D.PackedArrays | None
    pad_id: int
    tok_dir: str
    export_dtype: torch.dtype
    start: int          # the first step to run (> 0 when resumed)
    spe: int            # steps per epoch
    total: int          # steps of the whole stage
    accum: int          # micro-batches per rank per step
    setup_s: float
    data_s: float
    flops_per_token: float
    peak_flops: float | None


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak (None on CPU or an unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def flops_per_token(n_params: int, config, seq_len: int) -> float:
    """Training FLOPs per token, as MFU counts them: 6·N for the matmuls, 12·L·h·s for attention."""
    return 6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def make_optimizer(model, s: TrainSettings) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (biases and norms excluded, as HF Trainer does)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=tuple(s.betas), eps=s.eps, foreach=False)


def _load_data(cfg: dict) -> tuple[D.PackedArrays, D.PackedArrays | None]:
    """Every packed row of the stage's (unsplit) Ray Datasets, in file order."""
    import ray.train

    train = D.read_iterator(ray.train.get_dataset_shard("train"))
    valid = D.read_iterator(ray.train.get_dataset_shard("valid")) if cfg.get("has_valid") else None
    return train, valid


def _resume_step(model, opt, s: TrainSettings) -> int:
    """Load Train's latest checkpoint into the model and optimizer (DCP reshards); its step, or 0."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0
    with ckpt.as_directory() as d:
        fsdp.load_dcp(model, opt, d)
        meta = json.loads(open(os.path.join(d, "meta.json")).read())
    if meta.get("settings_key") != s.key():
        raise ValueError("the run's latest checkpoint was written with different settings; use a new run name")
    return int(meta["step"])


def setup(cfg: dict) -> Worker:
    """Seed, build the mesh, read the data, build and shard the model, resume from the latest checkpoint."""
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
    source = dict(cfg["source"])  # its folders may be storage URIs: this node's copies
    source["tokenizer_dir"] = tok_dir = fetch(source["tokenizer_dir"])
    if source.get("hf_dir"):
        source["hf_dir"] = fetch(source["hf_dir"])
    pad_id = AutoTokenizer.from_pretrained(tok_dir).pad_token_id or 0
    model = fsdp.build_sharded_model(source, mesh, device, seed=s.seed, bf16=bf16, ac=s.activation_checkpointing,
                                     init_hf_dir=cfg.get("init_hf_dir"), reshard_after_forward=s.reshard_after_forward)
    arch = [c.__name__ for c in type(model).__mro__ if c.__name__.endswith("ForCausalLM")
            and not c.__name__.startswith("FSDP")][:1]
    model.config.architectures = arch
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, s)
    start = _resume_step(model, opt, s)
    return Worker(cfg=cfg, s=s, policy=policy, rank=rank, ws=ws, device=device, model=model, opt=opt, train=train,
                  valid=valid, pad_id=pad_id, tok_dir=tok_dir, export_dtype=export_dtype, start=start,
                  spe=s.steps_per_epoch(len(train)), total=s.total_steps(len(train)), accum=s.accum_steps(ws),
                  setup_s=time.perf_counter() - t_load, data_s=data_s,
                  flops_per_token=flops_per_token(n_params, model.config, s.seq_len),
                  peak_flops=peak_flops(device))
