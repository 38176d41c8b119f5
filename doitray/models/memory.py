"""Memory planner: bytes per GPU of an FSDP2 fine-tuning run, and the smallest GPU count that fits.

Model of FSDP2 with bf16 mixed precision (fp32 sharded master weights, fp32 reduce):
- parameters: fp32 shards, 4·P/N, plus the bf16 unsharded copies of the blocks being computed
  (the current block and the prefetched next one);
- gradients: fp32 shards, 4·P/N, plus the unsharded bf16 gradients of those blocks;
- optimizer: AdamW moments m and v in fp32, 8·P/N (the master weights are the fp32 parameters);
- activations (per GPU, independent of N): with memory-efficient attention (SDPA/flash, no s² term),
  a Llama block saves ≈ s·b·(16·h + 8·i) bytes in bf16 (inputs of the norms, q/k/v, attention output,
  gate/up/SiLU/product); with activation checkpointing only each block's input (2·s·b·h) is kept plus
  one block's activations during recomputation; the logits add s·b·V·(2 + 4 + 4) (bf16 logits, fp32
  log-softmax and its gradient);
- overhead: CUDA context, NCCL buffers and allocator fragmentation, a fixed allowance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from doitray.models.presets import ModelPreset, param_counts

GIB = 1024 ** 3


@dataclass
class MemoryPlan:
    model: str
    params: int
    gpus: int
    gpu_mem_gib: float
    seq_len: int
    micro_batch: int
    activation_checkpointing: bool
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    overhead_bytes: int
    total_bytes: int
    fits: bool
    min_gpus: int | None          # the smallest N (power of two is not required) that fits; None: never

    def as_dict(self) -> dict:
        return asdict(self)


def _per_gpu(p: ModelPreset, n: int, seq: int, mb: int, ac: bool, overhead_gib: float) -> dict[str, int]:
    c = param_counts(p)
    total, layer = c["total"], c["per_layer"]
    prefetch = 2 * layer                                   # current + next block unsharded
    params = 4 * total // n + 2 * prefetch
    grads = 4 * total // n + 2 * prefetch
    optim = 8 * total // n
    tokens = seq * mb
    kvd = p.kv_heads * p.head_dim
    block = tokens * 2 * (6 * p.hidden + 2 * kvd + 4 * p.intermediate) + tokens * 4 * p.heads  # + softmax stats
    block += tokens * 2 * 2 * p.hidden                     # residual stream copies
    acts = (p.layers * 2 * tokens * p.hidden + block) if ac else p.layers * block
    acts += tokens * p.vocab * (2 + 4 + 4)
    return {"param_bytes": params, "grad_bytes": grads, "optimizer_bytes": optim, "activation_bytes": acts,
            "overhead_bytes": int(overhead_gib * GIB)}


def memory_plan(p: ModelPreset, *, gpus: int, gpu_mem_gib: float = 80.0, seq_len: int = 2048, micro_batch: int = 1,
         activation_checkpointing: bool = False, usable_fraction: float = 0.92, overhead_gib: float = 2.0,
         max_gpus: int = 4096) -> MemoryPlan:
    """Bytes per GPU for ``p`` on ``gpus`` GPUs of ``gpu_mem_gib`` GiB, and the smallest N that fits."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    if seq_len < 1 or micro_batch < 1:
        raise ValueError("seq_len and micro_batch must be >= 1")
    budget = gpu_mem_gib * GIB * usable_fraction
    parts = _per_gpu(p, gpus, seq_len, micro_batch, activation_checkpointing, overhead_gib)
    total = sum(parts.values())
    min_n = None
    for n in range(1, max_gpus + 1):
        if sum(_per_gpu(p, n, seq_len, micro_batch, activation_checkpointing, overhead_gib).values()) <= budget:
            min_n = n
            break
    return MemoryPlan(model=p.name, params=param_counts(p)["total"], gpus=gpus, gpu_mem_gib=gpu_mem_gib,
                      seq_len=seq_len, micro_batch=micro_batch, activation_checkpointing=activation_checkpointing,
                      total_bytes=total, fits=total <= budget, min_gpus=min_n, **parts)
