"""Tokenizers: load an HF tokenizer from a local path, or train a small one locally (no network).

The embedded default trains a byte-level BPE on its generated suite with HF ``tokenizers`` and caches
it under a content hash of (texts, vocab size, template), so every cell of a study shares one.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from doitray.data.templates import ChatTemplate, add_special_tokens, for_tokenizer


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, *, vocab_size: int = 2048,
                    template: ChatTemplate | None = None) -> str:
    """Train a byte-level BPE tokenizer on ``texts`` and save it as an HF tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"] + [t for t in (template.special_tokens if template else ())]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", clean_up_tokenization_spaces=False)
    if template is not None:
        add_special_tokens(fast, template)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return str(out)


def tokenizer_hash(tokenizer_dir: str) -> str:
    """A tokenizer's content key (its files' names and bytes): the same on every node, wherever the copy lies."""
    from doitray.scratch import fetch

    h = hashlib.sha256()
    for p in sorted(Path(fetch(tokenizer_dir)).glob("*")):
        if p.is_file() and not p.name.startswith("."):  # not a fetched copy's marker
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached_tokenizer(texts: list[str], cache_root: str | os.PathLike, *, vocab_size: int = 2048,
                     template: ChatTemplate | None = None) -> str:
    """``train_tokenizer`` once per (texts, vocab size, template), reused from ``cache_root`` after that."""
    h = hashlib.sha256()
    h.update(json.dumps([vocab_size, template.name if template else None]).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    out = Path(cache_root) / f"tokenizer-{h.hexdigest()[:16]}"
    if (out / "tokenizer.json").exists():
        return str(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    train_tokenizer(texts, tmp, vocab_size=vocab_size, template=template)
    try:
        os.replace(tmp, out)
    except OSError:  # another process won the race; theirs is identical
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def load_tokenizer(path: str | os.PathLike, template: ChatTemplate | None = None, *, gguf_file: str | None = None):
    """An HF tokenizer from a directory (local, or a storage URI fetched into this node's scratch) or a GGUF
    file, with the template's special tokens added."""
    from transformers import AutoTokenizer

    from doitray.scratch import fetch

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(fetch(str(path)), **kwargs)
    if template is not None:
        add_special_tokens(tok, template)
        for_tokenizer(template, tok)
    return tok
