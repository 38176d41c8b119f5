"""Training settings (the recipe of one stage) and the checkpoint policy; paper presets.

``global_batch`` is in sequences per optimizer step and never depends on the worker count: each rank
runs ``global_batch / (world_size * micro_batch)`` micro-batches (gradient accumulation).
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-5, gt=0)
    schedule: Literal["linear", "cosine", "polynomial", "constant"] = "linear"
    end_lr: float = Field(0.0, ge=0)
    power: float = Field(1.0, gt=0, description="exponent of the polynomial schedule")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="if set, overrides epochs")
    global_batch: int = Field(64, ge=1, description="sequences per optimizer step, whatever the worker count")
    micro_batch: int = Field(1, ge=1, description="sequences per forward pass on one worker")
    seq_len: int = Field(2048, ge=8)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 mixed precision on GPU, fp32 on CPU
    activation_checkpointing: bool = False
    reshard_after_forward: bool = Field(True, description="FSDP2: free gathered parameters after the forward pass "
                                        "(least memory); False keeps them for the backward pass (half the all-gathers)")
    grad_sync: Literal["micro_batch", "step"] = Field(
        "micro_batch", description="reduce-scatter gradients after every micro-batch (least memory) or once per "
        "optimizer step (fewer collectives; each worker holds unsharded parameters and gradients in between)")
    seed: int = 0
    log_every: int = Field(10, ge=1, description="send the buffered per-step metrics every N optimizer steps "
                           "(and at every checkpoint); each ray.train.report waits for the controller's next poll")
    export_dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _check(self):
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.end_lr > self.lr:
            raise ValueError(f"end_lr ({self.end_lr}) must not exceed lr ({self.lr}): the schedule decays to it")
        if self.global_batch % self.micro_batch:
            raise ValueError(f"global_batch ({self.global_batch}) must be a multiple of micro_batch ({self.micro_batch})")
        return self

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainSettings":
        """Paper presets: ``doit`` (DoIT), ``dmt`` (DMT), ``tiny`` (CPU tests and the laptop default).

        An ``lr`` given without ``end_lr`` scales the preset's end lr with it (same end/peak ratio).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown train settings preset {name!r}; allowed: {', '.join(PRESETS)}")
        base = PRESETS[name]
        if "lr" in overrides and "end_lr" not in overrides:
            overrides = {**overrides, "end_lr": base["end_lr"] * overrides["lr"] / base["lr"]}
        return cls(**{**base, **overrides})

    def accum_steps(self, world_size: int) -> int:
        """Micro-batches per rank per optimizer step for ``world_size`` workers."""
        per = self.global_batch // self.micro_batch
        if per % world_size:
            raise ValueError(f"global_batch/micro_batch = {per} is not divisible by {world_size} workers; "
                             "choose a global batch that every allowed worker count divides")
        return per // world_size

    def steps_per_epoch(self, n_rows: int) -> int:
        return max(1, math.ceil(n_rows / self.global_batch))

    def total_steps(self, n_rows: int) -> int:
        return self.max_steps or self.epochs * self.steps_per_epoch(n_rows)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(exclude={"log_every"}), sort_keys=True).encode()).hexdigest()[:16]


PRESETS: dict[str, dict] = {
    # DoIT: HF Trainer + DeepSpeed, 8 GPUs x 8 = 64, 15 epochs, lr 1e-5 linear decay (DS WarmupDecayLR), no warm-up
    "doit": dict(lr=1e-5, schedule="linear", end_lr=0.0, warmup_ratio=0.0, epochs=15, global_batch=64, micro_batch=8,
                 seq_len=2048, weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0),
    # DMT: FastChat recipe, lr 2e-5, 3 epochs, 3% warm-up, cosine (FastChat default), batch 16
    "dmt": dict(lr=2e-5, schedule="cosine", end_lr=0.0, warmup_ratio=0.03, epochs=3, global_batch=16, micro_batch=2,
                seq_len=2048, weight_decay=0.0, betas=(0.9, 0.999), grad_clip=1.0),
    # tiny models on CPU
    "tiny": dict(lr=3e-3, schedule="cosine", end_lr=3e-4, warmup_ratio=0.05, epochs=3, global_batch=8, micro_batch=2,
                 seq_len=256, weight_decay=0.0, betas=(0.9, 0.95), grad_clip=1.0,
                 reshard_after_forward=False, grad_sync="step"),   # collectives dominate for tiny models
}


class CheckpointPolicy(BaseModel):
    """When to checkpoint (DCP, for resume) and which checkpoints to export as HF directories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: Literal["epoch", "steps", "last"] = "epoch"
    every_n_steps: int | None = Field(None, ge=1)
    num_to_keep: int | None = Field(2, ge=1, description="DCP checkpoints kept for resume (exports are kept)")
    export: Literal["all", "last", "none"] = "all"   # the final weights are always exported (next stage, eval)

    @model_validator(mode="after")
    def _check(self):
        if self.every == "steps" and not self.every_n_steps:
            raise ValueError("every='steps' needs every_n_steps")
        return self

    def is_checkpoint_step(self, step: int, steps_per_epoch: int, total: int) -> bool:
        """Whether optimizer step ``step`` (1-based) ends with a checkpoint."""
        if step >= total:
            return True
        if self.every == "epoch":
            return step % steps_per_epoch == 0
        if self.every == "steps":
            return step % int(self.every_n_steps) == 0
        return False


def lr_factor(step: int, total: int, s: TrainSettings) -> float:
    """Multiplier of ``s.lr`` at optimizer step ``step`` (0-based) of ``total``."""
    warm = int(math.ceil(s.warmup_ratio * total))
    if warm and step < warm:
        return (step + 1) / warm
    if s.schedule == "constant":
        return 1.0
    frac = min(1.0, (step - warm) / max(1, total - warm))
    end = s.end_lr / s.lr
    if s.schedule == "linear":
        return end + (1 - end) * (1 - frac)
    if s.schedule == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * frac))
    return end + (1 - end) * (1 - frac) ** s.power
