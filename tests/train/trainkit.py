"""Test helpers: packed Parquet written exactly to the data layer's contract (a simple greedy packer), stage specs."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from doitray.data.templates import IGNORE_INDEX, get_template

SEQ = 128


def arithmetic_messages(n: int, seed: int = 0, ops: str = "+") -> list[list[dict]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randrange(40), rng.randrange(0, 40, 3)
        op = rng.choice(ops)
        val = a + b if op == "+" else a - b
        word = "plus" if op == "+" else "minus"
        out.append([{"role": "user", "content": f"What is {a} {word} {b}?"},
                    {"role": "assistant", "content": f"{a} {word} {b} is {val}."}])
    return out


def pack(encoded: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> dict[str, list]:
    rows = {"input_ids": [], "labels": [], "position_ids": [], "n_tokens": [], "n_loss_tokens": []}
    cur_i: list[int] = []
    cur_l: list[int] = []
    cur_p: list[int] = []

    def flush():
        if not cur_i:
            return
        n = len(cur_i)
        rows["n_tokens"].append(n)
        rows["n_loss_tokens"].append(sum(1 for x in cur_l if x != IGNORE_INDEX))
        pad = seq_len - n
        rows["input_ids"].append(cur_i + [pad_id] * pad)
        rows["labels"].append(cur_l + [IGNORE_INDEX] * pad)
        rows["position_ids"].append(cur_p + list(range(pad)))
        cur_i.clear(), cur_l.clear(), cur_p.clear()

    for ids, labels in encoded:
        ids, labels = ids[:seq_len], labels[:seq_len]
        if len(cur_i) + len(ids) > seq_len:
            flush()
        cur_i.extend(ids)
        cur_l.extend(labels)
        cur_p.extend(range(len(ids)))
    flush()
    return rows


def write_packed(out_dir: str | Path, tokenizer, messages: list[list[dict]], seq_len: int,
                 template: str = "doit", tensor_columns: bool = False) -> str:
    """Tokenize with the template, pack, and write ``out_dir`` (Parquet + packed.json)."""
    tmpl = get_template(template)
    enc = [tmpl.encode(tokenizer, m, seq_len) for m in messages]
    rows = pack([(e.input_ids, e.labels) for e in enc], seq_len, tokenizer.pad_token_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = {}
    for c in ("input_ids", "labels", "position_ids"):
        arr = np.asarray(rows[c], dtype=np.int32)
        if tensor_columns:
            from ray.data.extensions import ArrowTensorArray
            cols[c] = ArrowTensorArray.from_numpy(arr)
        else:
            cols[c] = pa.array(list(arr), type=pa.list_(pa.int32()))
    cols["n_tokens"] = pa.array(rows["n_tokens"], type=pa.int32())
    cols["n_loss_tokens"] = pa.array(rows["n_loss_tokens"], type=pa.int32())
    pq.write_table(pa.table(cols), out / "part-0.parquet")
    n_tok = sum(rows["n_tokens"])
    (out / "packed.json").write_text(json.dumps({
        "seq_len": seq_len, "n_rows": len(rows["input_ids"]), "n_examples": len(messages), "n_tokens": n_tok,
        "n_loss_tokens": sum(rows["n_loss_tokens"]), "pad_fraction": 1 - n_tok / (seq_len * len(rows["input_ids"])),
        "n_truncated": sum(e.truncated for e in enc), "n_dropped": 0, "tokenizer": "test", "template": template}))
    return str(out)


def make_spec(root, tokenizer_dir, packed, **kw):
    from doitray.train.settings import CheckpointPolicy, TrainSettings
    from doitray.train.stage import StageSpec

    settings = kw.pop("settings", None) or TrainSettings.preset(
        "tiny", seq_len=SEQ, epochs=4, global_batch=8, micro_batch=2, lr=3e-3, warmup_ratio=0.1, end_lr=3e-4)
    base = dict(name="ref", model="tiny-s", tokenizer_dir=tokenizer_dir, train_data=packed["train"],
                valid_data=packed["valid"], settings=settings,
                checkpoint=CheckpointPolicy(every="epoch", num_to_keep=2, export="all"),
                storage_path=str(root / "storage"), cache_dir=str(root / "cache"), num_workers=2)
    base.update(kw)
    return StageSpec(**base)
