"""FSDP2 on a Train worker: build/shard the model, load HF weights slice by slice, DCP save/load, export.

- ``fully_shard`` each decoder block, then the root, on a 1-D ``dp`` device mesh (``cpu`` mesh → gloo,
  ``cuda`` → NCCL); bf16 parameters with fp32 reduction on GPU, fp32 on CPU.
- Pretrained weights: meta-device model → shard → ``to_empty`` → ``dcp.load`` through
  ``HuggingFaceStorageReader`` (each rank reads only its slices) → recompute RoPE buffers.
- Checkpoints: DCP (``.distcp`` shards + ``.metadata``), model and optimizer; loading reshards to any
  world size. Never pickles: DCP metadata is read by torch with its own safe loader, meta is JSON.
- Export: a full state dict gathered on every rank (collective), written by rank 0 as safetensors.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from doitray.models.loading import build_config_model, build_meta_model, reinit_buffers


def decoder_layers(model) -> list:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no .model.layers to shard")
    return list(layers)


def shard_model(model, mesh, *, bf16: bool, activation_checkpointing: bool, reshard_after_forward: bool = True):
    """Apply activation checkpointing (optional) and FSDP2 per decoder block, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
          else MixedPrecisionPolicy())
    for block in decoder_layers(model):
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


def reshard_all(model) -> None:
    """Free every gathered parameter (after no-grad forwards when ``reshard_after_forward`` is off)."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def build_sharded_model(source: dict, mesh, device: torch.device, *, seed: int, bf16: bool, ac: bool,
                        init_hf_dir: str | None = None, reshard_after_forward: bool = True):
    """The FSDP2 model of a stage: random init from a config, or pretrained weights from an HF dir."""
    hf_dir = init_hf_dir or (source["hf_dir"] if source["kind"] == "hf" else None)
    if hf_dir is None:
        model = build_config_model(source["config"], seed).to(device)
        model.config.use_cache = False
        return shard_model(model, mesh, bf16=bf16, activation_checkpointing=ac,
                           reshard_after_forward=reshard_after_forward)
    model = build_meta_model(hf_dir)
    model.config.use_cache = False
    shard_model(model, mesh, bf16=bf16, activation_checkpointing=ac, reshard_after_forward=reshard_after_forward)
    model.to_empty(device=device)
    load_hf_weights(model, hf_dir)
    reinit_buffers(model, device)
    return model


def load_hf_weights(model, hf_dir: str) -> None:
    """Load HF safetensors into a (sharded) model; each rank reads only the slices it holds."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    sd = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)          # tied: the same parameter as the input embeddings
    dcp.load(sd, storage_reader=HuggingFaceStorageReader(hf_dir))


def save_dcp(model, optimizer, out_dir: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=out_dir)


def load_dcp(model, optimizer, ckpt_dir: str) -> None:
    """Load a DCP checkpoint written at any world size into this (sharded) model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=ckpt_dir)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU (a collective: every rank must call it); full on rank 0 only."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def write_hf(state: dict[str, torch.Tensor], config, tokenizer_dir: str, out_dir: str, *, dtype: torch.dtype,
             generation: dict | None = None, max_shard_bytes: int = 4 * 1024 ** 3) -> str:
    """Write an HF directory: safetensors (sharded over ``max_shard_bytes``), config, generation config,
    tokenizer. Loadable by ``transformers`` and by vLLM."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    if getattr(config, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(tensors):
        nbytes = tensors[k].numel() * tensors[k].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = tensors[k]
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, sh in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(sh, str(out / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in sh})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    cfg = config.__class__.from_dict(config.to_dict())
    cfg.use_cache = True
    cfg.dtype = dtype
    cfg.save_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(str(out))
    gen = dict(generation or {})
    GenerationConfig(bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, **gen).save_pretrained(str(out))
    return str(out)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def local_shard_stats(model) -> dict[str, Any]:
    """How this rank's parameters are sharded: local vs full element counts (for tests and logs)."""
    from torch.distributed.tensor import DTensor

    local = full = sharded = total = 0
    for p in model.parameters():
        total += 1
        if isinstance(p, DTensor):
            ln, fn = p.to_local().numel(), p.numel()
            local += ln
            full += fn
            sharded += int(ln < fn)
        else:
            local += p.numel()
            full += p.numel()
    return {"local_numel": local, "full_numel": full, "n_params": total, "n_sharded": sharded,
            "rank": dist.get_rank() if dist.is_initialized() else 0, "pid": os.getpid()}
