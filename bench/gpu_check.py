#!/usr/bin/env python3
"""GPU check: what of doitray can be proven on one CUDA device without Ray and vLLM, ready to run.

    python3 bench/gpu_check.py --out OUT_DIR [--device auto|cuda|cpu] [--budget-s S] [--work DIR] [--wheels DIR]

Writes ``OUT_DIR/gpu_check.json`` (the summary) and ``OUT_DIR/gpu_check.log``, prints a short table, and
exits 0 when every part that ran passed. It runs the project's own code, not copies, in one process,
world size 1, initialising ``torch.distributed`` itself (NCCL on CUDA, gloo on CPU):

1. **train**: the synthetic suite tokenized with the DoIT template and packed (``doitray.data``); a random
   init written as an HF directory, then the project's model build (meta device -> ``fully_shard`` per
   block -> ``to_empty`` -> weights through DCP's ``HuggingFaceStorageReader``; ``doitray.train.fsdp``),
   activation checkpointing, ``train_step`` (gradient accumulation, clip, AdamW from ``make_optimizer``),
   bf16 mixed precision on CUDA: tokens/s, MFU (``train_step``'s formula over ``setup.PEAK_FLOPS``), peak
   memory. **resume**: ``save_dcp`` mid-run, a fresh build + ``load_dcp``, the next steps' losses equal
   those of the run that went on without reloading. **export**: ``full_state_dict`` + ``write_hf``; the
   directory loads in transformers and gives the sharded model's logits within tolerance.
2. **planner**: measured peak memory against ``doitray.models.memory.memory_plan`` for the same shape,
   micro-batch 2 and 8, activation checkpointing on and off; the ratio (only reported, never fixed here).
3. **eval**: ``doitray.eval.evaluate.infer`` (the evaluation's own request building: prompt log-probs of
   each choice, the option letters' log-probs at the first generated token) answered by ``HFEngine``,
   transformers on the device, against the same computation on the CPU, for the exported checkpoint.
4. **ray**: not run: Ray's wheel does not fit the files that travel with the tree (see ``RAY_WHEEL_BYTES``).

On CUDA the shape is a 1B-class LLaMA-1 block stack with the Chinese-LLaMA-Plus vocabulary (49,953) at
seq 2048 (``gpu_shape``; no preset has that size). Without a GPU the same code runs on CPU (tiny-xs, seq
128, gloo), which is what CI runs so the check does not rot. Every part has a step cap and a time guard
(``--budget-s``; 420 s on CUDA). Nothing here imports Ray or vLLM (the summary records it).

The GPU machine this is planned for has torch, transformers, safetensors, peft and scipy but perhaps not
pydantic (``TrainSettings``) nor pyarrow (``doitray.records``, ``data.sources`` and ``train.storage`` import
it at module level): ``--wheels DIR`` installs whichever is missing from carried wheels into the scratch
folder (pip ``--no-index``, or unpacking the wheels where pip is absent); without them the script stops at
once with a message naming the modules. bench/RESULTS.md ("GPU check") has the exact command.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))       # doitray from the tree: its pyproject says python < 3.12
for _k, _v in {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ.setdefault(_k, _v)

MIB, GIB = 1024 ** 2, 1024 ** 3
# pip download ray==2.60.0 --no-deps --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64
# (measured 2026-12-01); what travels with the tree to the GPU machine is at most 64 MiB, wheels included
RAY_WHEEL = "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl"
RAY_WHEEL_BYTES = 79_321_593
CARRY_BUDGET_MIB = 64
NEEDED = ("torch", "numpy", "transformers", "tokenizers", "safetensors", "pydantic", "pyarrow")
UNMEASURED = [
    "Ray Train TorchTrainer stage on the GPU (Ray's wheel does not fit the 64 MiB that travels with the tree)",
    "Serve + vLLM on CUDA (vllm is not installed on the GPU machine): engine throughput, reload_weights",
    "tensor-parallel vLLM (33B presets) and multi-GPU FSDP2 (NCCL collectives across ranks): one GPU only",
]
LOG = logging.getLogger("gpu_check")


@dataclass(frozen=True)
class Sizes:
    """Sizes and caps of one mode."""

    seq: int
    train_per_ability: int        # generated training records per ability
    valid_per_ability: int
    tokenizer_vocab: int
    micro_batch: int
    accum: int                    # micro-batches per optimizer step (world size 1)
    warmup_steps: int             # not timed
    measure_steps: int            # timed; the DCP checkpoint follows them
    continue_steps: int           # after the checkpoint: with and without reloading
    planner_micro_batches: tuple[int, ...]
    planner_steps: int
    eval_per_ability: int
    eval_max_tokens: int
    budget_s: float
    guard_scale: float            # multiplies the per-part time guards below


GPU = Sizes(seq=2048, train_per_ability=300, valid_per_ability=2, tokenizer_vocab=2048, micro_batch=2, accum=4,
            warmup_steps=2, measure_steps=4, continue_steps=2, planner_micro_batches=(2, 8), planner_steps=2,
            eval_per_ability=1, eval_max_tokens=4, budget_s=420.0, guard_scale=1.0)
CPU = Sizes(seq=128, train_per_ability=30, valid_per_ability=2, tokenizer_vocab=1024, micro_batch=2, accum=2,
            warmup_steps=1, measure_steps=2, continue_steps=2, planner_micro_batches=(2, 8), planner_steps=2,
            eval_per_ability=1, eval_max_tokens=4, budget_s=240.0, guard_scale=0.1)
GUARD_S = {"train": 60, "resume": 45, "export": 30, "planner": 40, "eval": 45}   # seconds left to start a part


def gpu_shape():
    """The CUDA shape: LLaMA-1 blocks at 1B (h 2048, 16 layers, 16 heads) with Chinese-LLaMA-Plus's vocabulary."""
    from doitray.models.presets import ModelPreset

    return ModelPreset("chinese-llama-1b-check", "llama", hidden=2048, intermediate=5504, layers=16, heads=16,
                       kv_heads=16, vocab=49953, max_positions=2048, norm_eps=1e-6, source="config",
                       note="1B-class LLaMA-1 shape with the Chinese-LLaMA-Plus vocabulary (49,953); random init")


def cpu_shape(vocab: int):
    from doitray.models.presets import get_preset

    return get_preset("tiny-xs").with_vocab(vocab)


class Clock:
    def __init__(self, budget_s: float):
        self.t0, self.budget = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()


class Ctx:
    """What the parts share: device, mesh, data, tokenizer, the init checkpoint, the run's state."""

    def __init__(self, sizes: Sizes, device, clock: Clock, work: Path):
        self.sizes, self.device, self.clock, self.work = sizes, device, clock, work
        self.cuda = device.type == "cuda"
        self.mesh = None
        self.shape = None
        self.tok = None
        self.tok_dir = ""
        self.template = None
        self.train = None
        self.valid_records: list[dict] = []
        self.init_dir = ""
        self.dcp_dir = ""
        self.export_dir = ""
        self.continued: list[dict] = []
        self.ckpt_at = 0
        self.train_settings = None
        self.worker_b = None


# --- torch.distributed, world size 1 ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device):
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=device)
    else:
        dist.init_process_group("gloo", rank=0, world_size=1)
    return init_device_mesh(device.type, (1,), mesh_dim_names=("dp",))


def free_memory(ctx: Ctx) -> None:
    import torch

    gc.collect()
    if ctx.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# --- data, tokenizer, the random-init checkpoint ---------------------------------------------------
def prepare(ctx: Ctx) -> dict:
    """The generated suite (DoIT reader), a BPE tokenizer with the DoIT template, packed rows, an init HF dir."""
    import numpy as np
    import torch

    from doitray.data.packing import pack
    from doitray.data.sources import SourceSpec, read_sources
    from doitray.data.templates import get_template
    from doitray.data.tokenizer import load_tokenizer, train_tokenizer
    from doitray.models.loading import build_config_model
    from doitray.models.presets import hf_config
    from doitray.train import data as D
    from doitray.train import fsdp
    from doitray.train.stage import _generation

    z = ctx.sizes
    t0 = time.perf_counter()
    recs, q = read_sources([SourceSpec(name="suite", format="synthetic", options={
        "seed": 0, "train": z.train_per_ability, "valid": z.valid_per_ability, "test": 0, "synthetic": 0})],
        ctx.work / "cache")
    train_recs = [r for r in recs if r["split"] == "train"]
    ctx.valid_records = [r for r in recs if r["split"] == "valid"]
    ctx.template = get_template("doit")
    texts = [m["content"] for r in train_recs for m in r["messages"]]
    ctx.tok_dir = train_tokenizer(texts, ctx.work / "tokenizer", vocab_size=z.tokenizer_vocab, template=ctx.template)
    ctx.tok = tok = load_tokenizer(ctx.tok_dir, ctx.template)
    examples = []
    for r in train_recs:
        e = ctx.template.encode(tok, r["messages"], max_len=z.seq)
        if e.n_loss_tokens:
            examples.append((e.input_ids, e.labels))
    cols, stats = pack(examples, z.seq, tok.pad_token_id)
    ctx.train = D.PackedArrays(**{c: cols[c].astype(np.int64) for c in D.COLUMNS})
    if len(ctx.train) < max((z.micro_batch * z.accum, *z.planner_micro_batches)):
        raise ValueError(f"only {len(ctx.train)} packed rows; more training records are needed")
    ctx.shape = gpu_shape() if ctx.cuda else cpu_shape(len(tok))
    cfg = hf_config(ctx.shape, vocab_size=ctx.shape.vocab, pad_token_id=tok.pad_token_id,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg.architectures = ["LlamaForCausalLM"]
    t1 = time.perf_counter()
    model = build_config_model(cfg.to_dict(), seed=0)
    # the "pretrained" weights a stage starts from: bf16 safetensors, as released checkpoints are
    ctx.init_dir = fsdp.write_hf(model.state_dict(), model.config, ctx.tok_dir, str(ctx.work / "init-hf"),
                                 dtype=torch.bfloat16, generation=_generation(tok, "doit"))
    n_params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    return {"status": "ok", "records": len(recs), "quarantined": len(q),
            "train_examples": len(examples), "packed_rows": len(ctx.train), "seq_len": z.seq,
            "pad_fraction": round(stats.pad_fraction, 4), "tokenizer_size": len(tok), "model": ctx.shape.name,
            "vocab": ctx.shape.vocab, "params": n_params, "data_s": round(t1 - t0, 1),
            "init_checkpoint_s": round(time.perf_counter() - t1, 1)}


# --- a Worker built by the project's code, without Ray ---------------------------------------------
def settings_for(ctx: Ctx, micro_batch: int, accum: int, steps: int, ac: bool):
    from doitray.train.settings import TrainSettings

    # DoIT's recipe (AdamW betas 0.9/0.95, wd 0.1, clip 1.0, linear decay) at a lr that moves a random init
    return TrainSettings.preset("doit", lr=1e-4, max_steps=steps, global_batch=micro_batch * accum,
                                micro_batch=micro_batch, seq_len=ctx.sizes.seq, activation_checkpointing=ac,
                                log_every=1, seed=0)


def build_worker(ctx: Ctx, s):
    """What ``doitray.train.setup.setup`` builds, minus Ray: sharded model from the init HF dir, optimizer."""
    import random

    import numpy as np
    import torch

    from doitray.train import fsdp
    from doitray.train.settings import CheckpointPolicy
    from doitray.train.setup import Worker, flops_per_token, make_optimizer, peak_flops

    t0 = time.perf_counter()
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    bf16 = s.precision == "bf16" or (s.precision == "auto" and ctx.cuda)
    export_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        s.export_dtype, torch.bfloat16 if bf16 else torch.float32)
    source = {"kind": "hf", "name": ctx.shape.name, "tokenizer_dir": ctx.tok_dir, "config": None,
              "hf_dir": ctx.init_dir, "key": ""}
    model = fsdp.build_sharded_model(source, ctx.mesh, ctx.device, seed=s.seed, bf16=bf16,
                                     ac=s.activation_checkpointing, reshard_after_forward=s.reshard_after_forward)
    model.config.architectures = ["LlamaForCausalLM"]
    opt = make_optimizer(model, s)
    n_params = sum(p.numel() for p in model.parameters())
    c = model.config
    return Worker(cfg={}, s=s, policy=CheckpointPolicy(every="last"), rank=0, ws=1, device=ctx.device, model=model,
                  opt=opt, train=ctx.train, valid=None, pad_id=ctx.tok.pad_token_id or 0, tok_dir=ctx.tok_dir,
                  export_dtype=export_dtype, start=0, spe=s.steps_per_epoch(len(ctx.train)),
                  total=s.total_steps(len(ctx.train)), accum=s.accum_steps(1), setup_s=time.perf_counter() - t0,
                  data_s=0.0,
                  # the expression of doitray/train/setup.py setup() (it is not a function there)
                  flops_per_token=flops_per_token(n_params, c, s.seq_len),
                  peak_flops=peak_flops(ctx.device))


STEP_KEYS = ("step", "train_loss", "grad_norm", "lr", "step_time_s", "tokens_per_s", "peak_memory_bytes", "mfu")


def _step(w, step: int) -> dict:
    from doitray.train.step import train_step

    m = train_step(w, step)
    LOG.debug("step %s: %s", step, {k: m.get(k) for k in STEP_KEYS})
    return {k: m.get(k) for k in STEP_KEYS}


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --- part 1: train, resume, export ---------------------------------------------------------------
def part_train(ctx: Ctx) -> dict:
    import torch

    from doitray.train import fsdp

    z = ctx.sizes
    ckpt_at = z.warmup_steps + z.measure_steps
    ctx.train_settings = s = settings_for(ctx, z.micro_batch, z.accum, ckpt_at + z.continue_steps, ac=True)
    free_memory(ctx)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    w = build_worker(ctx, s)
    w.model.train()
    steps = []
    for step in range(ckpt_at):
        steps.append(_step(w, step))
        if step >= z.warmup_steps and ctx.clock.left() < GUARD_S["resume"] * z.guard_scale * 2:
            LOG.info("train: time guard after step %d", step + 1)
            break
    ctx.ckpt_at = ckpt_at = len(steps)
    timed = steps[z.warmup_steps:] or steps[-1:]
    peak = max(m["peak_memory_bytes"] for m in steps)
    t0 = time.perf_counter()
    ctx.dcp_dir = str(ctx.work / "dcp")
    fsdp.save_dcp(w.model, w.opt, ctx.dcp_dir)
    save_s = time.perf_counter() - t0
    ctx.continued = [_step(w, step) for step in range(ckpt_at, ckpt_at + z.continue_steps)]
    out = {"status": "ok", "precision": "bf16 mixed (fp32 master, fp32 reduce)" if ctx.cuda else "fp32",
           "backend": _backend(), "seq_len": z.seq, "micro_batch": z.micro_batch, "accum": z.accum,
           "global_batch": s.global_batch, "activation_checkpointing": True, "build_s": round(w.setup_s, 1),
           "steps_run": len(steps) + len(ctx.continued), "timed_steps": len(timed),
           "tokens_per_s": _median([m["tokens_per_s"] for m in timed]),
           "step_time_s": _median([m["step_time_s"] for m in timed]),
           "mfu": _median([m["mfu"] for m in timed]), "flops_per_token": w.flops_per_token,
           "peak_flops": w.peak_flops, "peak_memory_bytes": peak, "peak_memory_gib": round(peak / GIB, 3),
           "peak_memory_kind": "torch.cuda.max_memory_allocated" if ctx.cuda else "process max RSS",
           "losses": [round(m["train_loss"], 5) for m in steps + ctx.continued], "checkpoint_step": ckpt_at,
           "dcp_save_s": round(save_s, 1), "dcp_bytes": _dir_bytes(ctx.dcp_dir)}
    del w
    free_memory(ctx)
    return out


def part_resume(ctx: Ctx) -> dict:
    from doitray.train import fsdp

    ckpt_at = ctx.ckpt_at
    w = build_worker(ctx, ctx.train_settings)      # the same settings: the same lr schedule
    t0 = time.perf_counter()
    fsdp.load_dcp(w.model, w.opt, ctx.dcp_dir)
    load_s = time.perf_counter() - t0
    w.model.train()
    reloaded = [_step(w, step) for step in range(ckpt_at, ckpt_at + len(ctx.continued))]
    ctx.worker_b = w
    tol = 1e-3 if ctx.cuda else 1e-5    # bf16 kernels with atomics (attention backward) vs fp32 on CPU
    rel = [abs(a["train_loss"] - b["train_loss"]) / max(abs(a["train_loss"]), 1e-12)
           for a, b in zip(ctx.continued, reloaded)]
    gn = [abs(a["grad_norm"] - b["grad_norm"]) / max(abs(a["grad_norm"]), 1e-12)
          for a, b in zip(ctx.continued, reloaded) if a["grad_norm"] is not None and b["grad_norm"] is not None]
    ok = bool(rel) and max(rel) <= tol
    return {"status": "ok" if ok else "failed: losses after reload differ from the continued run",
            "checkpoint_step": ckpt_at, "dcp_load_s": round(load_s, 1),
            "continued_losses": [m["train_loss"] for m in ctx.continued],
            "reloaded_losses": [m["train_loss"] for m in reloaded],
            "loss_max_rel_diff": max(rel) if rel else None, "grad_norm_max_rel_diff": max(gn) if gn else None,
            "tolerance": tol}


def part_export(ctx: Ctx) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from doitray.train import data as D
    from doitray.train import fsdp
    from doitray.train.stage import _generation
    from doitray.train.step import micro_arrays, to_device

    w = ctx.worker_b
    dtype = w.export_dtype
    t0 = time.perf_counter()
    full = fsdp.full_state_dict(w.model)
    ctx.export_dir = fsdp.write_hf(full, w.model.config, w.tok_dir, str(ctx.work / "export-hf"),
                                   dtype=dtype, generation=_generation(ctx.tok, "doit"))
    del full
    export_s = time.perf_counter() - t0
    n_rows = 1 if ctx.cuda else 2
    b = to_device(micro_arrays(ctx.train, np.arange(n_rows), w.pad_id), ctx.device)
    w.model.eval()
    with torch.no_grad():
        ref = w.model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits.float()
    fsdp.reshard_all(w.model)
    ctx.worker_b = None
    del w
    free_memory(ctx)
    t1 = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(ctx.export_dir, dtype=dtype).to(ctx.device).eval()
    load_s = time.perf_counter() - t1
    with torch.no_grad():
        got = hf(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits.float()
    del hf
    free_memory(ctx)
    diff = (got - ref).abs()
    scale = max(1.0, float(ref.abs().max()))
    tgt = b["targets"].reshape(-1)

    def nll(x):
        return float(F.cross_entropy(x.reshape(-1, x.shape[-1]), tgt, ignore_index=D.IGNORE_INDEX))

    top1 = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    bf16 = dtype == torch.bfloat16
    # bf16: 8 ulps (2^-7 each) of the largest logit; fp32: float noise
    tol = (0.0625 if bf16 else 1e-4) * scale
    ok = float(diff.max()) <= tol and top1 >= (0.98 if bf16 else 1.0)
    return {"status": "ok" if ok else "failed: the HF export's logits differ from the sharded model's",
            "dtype": str(dtype).removeprefix("torch."), "export_s": round(export_s, 1),
            "hf_load_s": round(load_s, 1), "export_bytes": _dir_bytes(ctx.export_dir), "rows": n_rows,
            "logits_max_abs_diff": float(diff.max()), "logits_mean_abs_diff": float(diff.mean()),
            "logits_scale": scale, "tolerance": tol, "top1_agreement": top1,
            "nll_sharded": nll(ref), "nll_hf": nll(got)}


# --- part 2: planner calibration ---------------------------------------------------------------
def part_planner(ctx: Ctx) -> dict:
    import torch

    from doitray.models.memory import memory_plan

    z = ctx.sizes
    gpu_gib = torch.cuda.get_device_properties(ctx.device).total_memory / GIB if ctx.cuda else 80.0
    rows = []
    for mb in z.planner_micro_batches:
        for ac in (True, False):
            if ctx.clock.left() < 15 * z.guard_scale + (GUARD_S["eval"] * z.guard_scale):
                rows.append({"micro_batch": mb, "activation_checkpointing": ac, "status": "skipped: time guard"})
                continue
            plan = memory_plan(ctx.shape, gpus=1, gpu_mem_gib=gpu_gib, seq_len=z.seq, micro_batch=mb,
                               activation_checkpointing=ac)
            row = {"micro_batch": mb, "activation_checkpointing": ac, "plan_total_bytes": plan.total_bytes,
                   "plan_without_overhead_bytes": plan.total_bytes - plan.overhead_bytes,
                   "plan_parts": {k: getattr(plan, k) for k in ("param_bytes", "grad_bytes", "optimizer_bytes",
                                                                 "activation_bytes", "overhead_bytes")}}
            free_memory(ctx)
            base_used = _device_used(ctx)
            row["allocated_at_start_bytes"] = int(torch.cuda.memory_allocated(ctx.device)) if ctx.cuda else 0
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats(ctx.device)
            w = None
            try:
                w = build_worker(ctx, settings_for(ctx, mb, 1, z.planner_steps, ac))
                w.model.train()
                ms = [_step(w, st) for st in range(z.planner_steps)]
                row.update(status="ok", tokens_per_s=ms[-1]["tokens_per_s"], mfu=ms[-1]["mfu"])
            except torch.OutOfMemoryError as e:     # a finding, not a crash: the plan said it fits
                row["status"] = f"oom: {str(e).splitlines()[0]}"
            finally:
                w = None
            alloc = int(torch.cuda.max_memory_allocated(ctx.device)) if ctx.cuda else _rss_peak()
            reserved = int(torch.cuda.max_memory_reserved(ctx.device)) if ctx.cuda else alloc
            free_memory(ctx)
            row.update(measured_allocated_bytes=alloc, measured_reserved_bytes=reserved,
                       context_bytes=base_used, measured_total_bytes=reserved + base_used,
                       ratio=round((reserved + base_used) / plan.total_bytes, 3),
                       ratio_allocated=round(alloc / max(1, plan.total_bytes - plan.overhead_bytes), 3))
            row["plan_optimistic"] = row["measured_total_bytes"] > plan.total_bytes or row["status"].startswith("oom")
            LOG.info("planner mb=%d ac=%s: measured %.2f GiB, plan %.2f GiB, ratio %.2f", mb, ac,
                     row["measured_total_bytes"] / GIB, plan.total_bytes / GIB, row["ratio"])
            rows.append(row)
    done = [r for r in rows if "ratio" in r]
    note = ("ratio = (peak reserved + memory in use before the build: CUDA context, NCCL) / plan total; "
            "ratio_allocated = peak allocated / (plan total - its overhead allowance)")
    if not ctx.cuda:
        note = "CPU: process max RSS (monotonic over the run), not comparable with a GPU plan; " + note
    return {"status": "ok" if done else "skipped: time guard", "gpu_mem_gib": round(gpu_gib, 1), "seq_len": z.seq,
            "rows": rows, "max_ratio": max(r["ratio"] for r in done) if done else None,
            "plan_optimistic": any(r["plan_optimistic"] for r in done) if ctx.cuda else None, "note": note}


def _device_used(ctx: Ctx) -> int:
    import torch

    if not ctx.cuda:
        return 0
    free, total = torch.cuda.mem_get_info(ctx.device)
    return int(total - free - torch.cuda.memory_reserved(ctx.device))


def _rss_peak() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


# --- part 3: evaluation scoring without vLLM ------------------------------------------------------
class HFEngine:
    """The two requests ``doitray.eval.evaluate.infer`` sends an engine, answered with transformers.

    ``score``: mean negative log-likelihood of ``ids[start:]`` given ``ids[:start]`` (vLLM's prompt
    log-probs); ``generate``: greedy reply, and the log-probs of the given letter ids at the first
    generated token (vLLM's ``logprob_token_ids``), from fp32 log-softmax of the raw logits.
    """

    def __init__(self, hf_dir: str, device, dtype, tokenizer):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
        self.device, self.tok = device, tokenizer

    def score(self, sequences: list[tuple[list[int], int]]) -> list[dict]:
        import torch

        out = []
        with torch.no_grad():
            for ids, start in sequences:
                x = torch.tensor([ids], device=self.device)
                lp = torch.log_softmax(self.model(input_ids=x, use_cache=False).logits[0].float(), -1)
                tgt = x[0, start:]
                tok_lp = lp[start - 1:-1].gather(1, tgt[:, None])[:, 0]
                out.append({"loss": float(-tok_lp.mean()), "n": int(tgt.numel()), "truncated": False})
        return out

    def generate(self, prompts: list[list[int]], *, max_tokens: int, stop_token_ids=None, stop=None,
                 letter_ids=None, n: int = 1, temperature: float = 0.0, seed=None) -> list[dict]:
        import torch

        if n != 1 or temperature:
            return [{"error": "HFEngine answers greedy single-sample requests only"} for _ in prompts]
        stops = set(stop_token_ids or [])
        out = []
        with torch.no_grad():
            for i, p in enumerate(prompts):
                x = torch.tensor([p], device=self.device)
                g = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                                        do_sample=False, eos_token_id=sorted(stops) or None,
                                        pad_token_id=self.tok.pad_token_id, output_logits=True,
                                        return_dict_in_generate=True)
                new = g.sequences[0, x.shape[1]:].tolist()
                cut = next((j for j, t in enumerate(new) if t in stops), None)
                finish = "stop" if cut is not None else "length"
                new = new[:cut] if cut is not None else new
                text = self.tok.decode(new, skip_special_tokens=True)
                for s in stop or []:
                    if s in text:
                        text, finish = text[:text.index(s)], "stop"
                letters = None
                ids = letter_ids[i] if letter_ids else None
                if ids:
                    first = torch.log_softmax(g.logits[0][0].float(), -1)
                    letters = {str(t): float(first[t]) for t in ids}
                out.append({"outputs": [{"text": text, "token_ids": new, "finish_reason": finish,
                                         "letter_logprobs": letters}], "prompt_tokens": len(p), "truncated": False})
        return out


def _eval_run(ctx: Ctx, items, device, dtype) -> dict:
    from doitray.eval.evaluate import infer, score

    t0 = time.perf_counter()
    eng = HFEngine(ctx.export_dir, device, dtype, ctx.tok)
    outs = infer(items, eng, ctx.tok, ctx.template)
    del eng
    free_memory(ctx)
    res = score(items, outs, cell_id="gpu-check", checkpoint="export")
    overall = next((r["value"] for r in res.scores if r["ability"] == "overall"), None)
    return {"outs": outs, "overall": overall, "item_scores": [p["score"] for p in res.predictions],
            "errors": [o.error for o in outs if o.error], "seconds": round(time.perf_counter() - t0, 1)}


def _best(letter_logprobs: dict) -> str:
    return max(letter_logprobs, key=lambda k: -1e30 if letter_logprobs[k] is None else letter_logprobs[k])


def _compare(a: dict, b: dict) -> dict:
    loss_d, lp_d, rank_same, letter_same, text_same = [], [], [], [], []
    for oa, ob in zip(a["outs"], b["outs"]):
        if oa.choice_losses and ob.choice_losses:
            loss_d += [abs(x - y) for x, y in zip(oa.choice_losses, ob.choice_losses)]
            rank_same.append(min(range(len(oa.choice_losses)), key=oa.choice_losses.__getitem__)
                             == min(range(len(ob.choice_losses)), key=ob.choice_losses.__getitem__))
        if oa.letter_logprobs and ob.letter_logprobs:
            pairs = [(oa.letter_logprobs[k], ob.letter_logprobs.get(k)) for k in oa.letter_logprobs]
            lp_d += [abs(x - y) for x, y in pairs if x is not None and y is not None]
            letter_same.append(_best(oa.letter_logprobs) == _best(ob.letter_logprobs))
        if oa.text is not None or ob.text is not None:
            text_same.append(oa.text == ob.text)

    def frac(xs):
        return round(sum(xs) / len(xs), 3) if xs else None

    return {"choice_loss_max_abs_diff": max(loss_d) if loss_d else None, "n_choice_losses": len(loss_d),
            "letter_logprob_max_abs_diff": max(lp_d) if lp_d else None, "n_letter_logprobs": len(lp_d),
            "rank_agreement": frac(rank_same), "letter_argmax_agreement": frac(letter_same),
            "text_agreement": frac(text_same), "score_agreement": frac([x == y for x, y in
                                                                       zip(a["item_scores"], b["item_scores"])])}


def part_eval(ctx: Ctx) -> dict:
    import torch

    from doitray.eval.evaluate import items_of
    from doitray.eval.suites import doit_suites

    z = ctx.sizes
    per: dict[str, int] = {}
    recs = []
    for r in ctx.valid_records:
        if per.get(r["ability"], 0) < z.eval_per_ability:
            per[r["ability"]] = per.get(r["ability"], 0) + 1
            recs.append(r)
    suites = doit_suites(recs, "valid", ood=False)
    for s in suites:
        s.max_tokens = z.eval_max_tokens
    items = items_of(suites)
    kinds: dict[str, int] = {}
    for it in items:
        kinds[it.kind] = kinds.get(it.kind, 0) + 1
    cpu = torch.device("cpu")
    ref = _eval_run(ctx, items, cpu, torch.float32)
    fp32 = _eval_run(ctx, items, ctx.device, torch.float32)
    bf16 = _eval_run(ctx, items, ctx.device, torch.bfloat16)
    c32, c16 = _compare(ref, fp32), _compare(ref, bf16)
    tol32, tol16 = 1e-3, 0.1
    errors = ref["errors"] + fp32["errors"] + bf16["errors"]

    def within(c, tol):
        return (c["n_choice_losses"] > 0 and c["n_letter_logprobs"] > 0 and c["choice_loss_max_abs_diff"] <= tol
                and c["letter_logprob_max_abs_diff"] <= tol)

    ok = not errors and within(c32, tol32) and within(c16, tol16)
    runs = {"cpu_fp32": ref, "device_fp32": fp32, "device_bf16": bf16}
    per_item = [{"id": it.rec["id"], "ability": it.rec["ability"], "kind": it.kind,
                 "choice_losses": {k: r["outs"][i].choice_losses for k, r in runs.items()},
                 "letter_logprobs": {k: r["outs"][i].letter_logprobs for k, r in runs.items()}}
                for i, it in enumerate(items) if it.kind in ("rank", "letters")]
    return {"status": "ok" if ok else "failed: device figures differ from the CPU's" + (
                f" ({len(errors)} item errors: {errors[0]})" if errors else ""),
            "device": ctx.device.type, "items": len(items), "kinds": kinds, "max_tokens": z.eval_max_tokens,
            "device_fp32_vs_cpu": {**c32, "tolerance": tol32}, "device_bf16_vs_cpu": {**c16, "tolerance": tol16},
            "overall_score": {"cpu_fp32": ref["overall"], "device_fp32": fp32["overall"],
                              "device_bf16": bf16["overall"]},
            "seconds": {"cpu_fp32": ref["seconds"], "device_fp32": fp32["seconds"], "device_bf16": bf16["seconds"]},
            "per_item": per_item}


# --- part 4: Ray -------------------------------------------------------------------------------
def part_ray() -> dict:
    mib = RAY_WHEEL_BYTES / MIB
    if mib > CARRY_BUDGET_MIB:
        return {"status": f"not run: ray wheel {mib:.1f} MiB > {CARRY_BUDGET_MIB} MiB budget", "wheel": RAY_WHEEL,
                "wheel_bytes": RAY_WHEEL_BYTES, "budget_mib": CARRY_BUDGET_MIB}
    return {"status": "not run: the one-worker TorchTrainer stage is not written (the wheel would fit)"}


# --- driver ------------------------------------------------------------------------------------
def _backend() -> str | None:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_initialized() else None


def _dir_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _env(device) -> dict:
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "cpus": os.cpu_count(), "device": str(device), "cuda": torch.version.cuda}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["device_mem_gib"] = round(torch.cuda.get_device_properties(device).total_memory / GIB, 1)
        try:
            env["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001 - informational only
            pass
    return env


def run_part(summary: dict, name: str, fn: Callable[[], dict], ctx: Ctx, *, needs: str | None = None) -> None:
    need_s = GUARD_S.get(name, 0) * ctx.sizes.guard_scale
    if needs and not str(summary.get(needs, {}).get("status", "")).startswith("ok"):
        summary[name] = {"status": f"skipped: needs {needs}"}
    elif ctx.clock.left() < need_s:
        summary[name] = {"status": f"skipped: time guard ({ctx.clock.left():.0f} s left, needs ~{need_s:.0f} s)"}
    else:
        LOG.info("%s: start (%.0f s elapsed)", name, ctx.clock.elapsed())
        t0 = time.perf_counter()
        try:
            summary[name] = fn()
        except Exception as e:  # noqa: BLE001 - one part's failure is reported, the others still run
            LOG.error("%s failed:\n%s", name, traceback.format_exc())
            summary[name] = {"status": f"failed: {type(e).__name__}: {str(e)[:300]}"}
        summary[name]["seconds_total"] = round(time.perf_counter() - t0, 1)
        LOG.info("%s: %s (%.1f s)", name, summary[name]["status"], summary[name]["seconds_total"])


def _fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def table(summary: dict) -> str:
    t, r, e, p, v = (summary.get(k, {}) for k in ("train", "resume", "export", "planner", "eval"))
    lines = [f"gpu_check  mode {summary['mode']}  {summary['env'].get('device_name', summary['env']['device'])}  "
             f"{summary['wall_s']:.0f} s  {'OK' if summary['ok'] else 'NOT OK'}",
             f"{'part':8s}  {'status':10s}  figures"]

    def row(name, part, figs):
        st = str(part.get("status", "-"))
        lines.append(f"{name:8s}  {(st if st == 'ok' else st[:60]):10s}  {figs if st == 'ok' else ''}".rstrip())

    row("train", t, f"tokens/s {_fmt(t.get('tokens_per_s'), ',.0f')}  MFU {_fmt(t.get('mfu'), '.3f')}  "
                    f"peak {_fmt(t.get('peak_memory_gib'), '.2f')} GiB  loss {t.get('losses', ['-'])[0]} -> "
                    f"{t.get('losses', ['-'])[-1]}")
    row("resume", r, f"continued {[round(x, 5) for x in r.get('continued_losses', [])]}  reloaded "
                     f"{[round(x, 5) for x in r.get('reloaded_losses', [])]}  max rel diff "
                     f"{_fmt(r.get('loss_max_rel_diff'), '.1e')}")
    row("export", e, f"max |dlogit| {_fmt(e.get('logits_max_abs_diff'), '.2e')} (tol {_fmt(e.get('tolerance'), '.1e')})"
                     f"  top-1 {_fmt(e.get('top1_agreement'), '.3f')}")
    row("planner", p, "  ".join(f"mb{x['micro_batch']}{'+ac' if x['activation_checkpointing'] else ''} "
                                f"{x['measured_total_bytes'] / GIB:.2f}/{x['plan_total_bytes'] / GIB:.2f} GiB="
                                f"{x['ratio']:.2f}" for x in p.get("rows", []) if "ratio" in x))
    c32, c16 = v.get("device_fp32_vs_cpu", {}), v.get("device_bf16_vs_cpu", {})
    row("eval", v, f"{v.get('items')} items; |d choice loss| fp32 {_fmt(c32.get('choice_loss_max_abs_diff'), '.1e')}"
                   f" bf16 {_fmt(c16.get('choice_loss_max_abs_diff'), '.1e')}; |d letter logprob| fp32 "
                   f"{_fmt(c32.get('letter_logprob_max_abs_diff'), '.1e')} bf16 "
                   f"{_fmt(c16.get('letter_logprob_max_abs_diff'), '.1e')}")
    lines.append(f"{'ray':8s}  {summary['ray']['status']}")
    lines.append("unmeasured: " + "; ".join(summary["unmeasured"]))
    return "\n".join(lines)


def _setup_logging(out: Path) -> None:
    LOG.setLevel(logging.DEBUG)
    for h in LOG.handlers:
        h.close()
    LOG.handlers.clear()
    fh = logging.FileHandler(out / "gpu_check.log", mode="w")
    fh.setLevel(logging.DEBUG)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(logging.INFO)
    sh.setFormatter(logging.Formatter("[gpu_check %(relativeCreated)6.0f ms] %(message)s"))
    LOG.addHandler(fh)
    LOG.addHandler(sh)
    LOG.propagate = False


def install_missing(modules: list[str], wheels: str, target: Path) -> list[str]:
    """``pip install --no-index`` ``modules`` from the folder ``wheels`` into ``target``; put it on sys.path."""
    import subprocess

    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
           "--target", str(target), *modules]
    LOG.info("installing %s from %s", modules, wheels)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:                         # no pip on the machine: a wheel is a zip of its install tree
        import zipfile

        LOG.warning("pip failed (%d): %s; unpacking every wheel in %s instead", r.returncode, r.stderr[-1000:],
                    wheels)
        for whl in sorted(Path(wheels).glob("*.whl")):
            with zipfile.ZipFile(whl) as z:
                z.extractall(target)
    sys.path.insert(1, str(target))          # after the repo root
    importlib.invalidate_caches()
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.log")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--budget-s", type=float, default=None, help="time guard (default 420 on CUDA, 240 on CPU)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--wheels", default=None, help="folder of wheels to install missing modules from (pip --no-index "
                    "--target <scratch>/deps), e.g. pydantic and pyarrow on a machine that lacks them")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    installed = install_missing(missing, args.wheels, work / "deps") if missing and args.wheels else []
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        msg = (f"missing modules {missing}: pass --wheels DIR holding their cp3{sys.version_info[1]} wheels "
               "(see bench/RESULTS.md, GPU check)")
        LOG.error(msg)
        (out / "gpu_check.json").write_text(json.dumps({"ok": False, "status": f"failed: {msg}"}, indent=1))
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        return 2

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    sizes = GPU if cuda else CPU
    clock = Clock(args.budget_s or sizes.budget_s)
    ctx = Ctx(sizes, device, clock, work)
    summary: dict[str, Any] = {"mode": "gpu" if cuda else "cpu", "env": _env(device), "started": time.time(),
                               "budget_s": clock.budget, "installed_from_wheels": installed}
    LOG.info("mode %s on %s; scratch %s", summary["mode"], device, work)
    try:
        ctx.mesh = init_distributed(device)
        summary["distributed"] = {"backend": _backend(), "world_size": 1}
        run_part(summary, "prepare", lambda: prepare(ctx), ctx)
        summary["shape"] = ({**{k: v for k, v in ctx.shape.__dict__.items() if k != "extra"},
                             "head_dim": ctx.shape.head_dim} if ctx.shape else None)
        run_part(summary, "train", lambda: part_train(ctx), ctx, needs="prepare")
        run_part(summary, "resume", lambda: part_resume(ctx), ctx, needs="train")
        run_part(summary, "export", lambda: part_export(ctx), ctx, needs="resume")
        ctx.worker_b = None
        free_memory(ctx)
        run_part(summary, "planner", lambda: part_planner(ctx), ctx, needs="prepare")
        run_part(summary, "eval", lambda: part_eval(ctx), ctx, needs="export")
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    summary["ray"] = part_ray()
    summary["unmeasured"] = UNMEASURED
    summary["ray_imported"] = "ray" in sys.modules
    summary["vllm_imported"] = "vllm" in sys.modules
    summary["wall_s"] = round(clock.elapsed(), 1)
    parts = ("prepare", "train", "resume", "export", "planner", "eval")
    summary["ok"] = all(str(summary.get(p, {}).get("status")) == "ok" for p in parts) and not summary["ray_imported"]
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    text = table(summary)
    LOG.debug("\n%s", text)
    print(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
