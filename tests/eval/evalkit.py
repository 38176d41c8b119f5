"""Eval test helpers: a tiny Llama checkpoint in the HF export format (safetensors + config + tokenizer)."""
from __future__ import annotations

from pathlib import Path


def build_tiny_checkpoint(tokenizer_dir: str, out_dir: str | Path, seed: int = 0) -> str:
    """A random tiny Llama (hidden 128, 2 layers, 2 heads → head_dim 64) saved like the training export."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False, torch_dtype="float32")
    model = LlamaForCausalLM(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return str(out)
