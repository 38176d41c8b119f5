"""The Ray Data pipeline from a mixture to packed training rows: tokenize (template) → truncate → pack.

Tokenization runs as ``map_batches`` with a callable class (an actor pool; each actor loads the
tokenizer once). Truncation policy: an example longer than ``seq_len`` is right-truncated (counted in
``n_truncated``); one left with no loss token is dropped (counted in ``n_dropped``). Packing runs once on
the driver over the tokenized examples in the mixture's canonical order, so the output is identical
whatever the block count. Tokens are cached per (data, tokenizer, template) under ``cache_dir/tokens``;
packed rows per (those, seq_len, pack) under ``cache_dir/packed/<key>/data`` (Parquet, numeric columns
only) with ``packed.json`` beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from doitray.data.packing import pack
from doitray.data.tokenizer import tokenizer_hash

PIPELINE_VERSION = 1
ROWS_PER_FILE = 4096


@dataclass
class Packed:
    """Packed training data: ``path`` (Parquet directory) and the figures of ``packed.json``."""

    path: str
    key: str
    seq_len: int
    n_rows: int
    n_examples: int
    n_tokens: int
    n_loss_tokens: int
    pad_fraction: float
    n_truncated: int
    n_dropped: int
    tokenizer: str
    template: str
    packed: bool = True

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Packed":
        info = json.loads((Path(out_dir) / "packed.json").read_text()) | {"path": str(Path(out_dir) / "data")}
        return cls(**{k: v for k, v in info.items() if k in cls.__dataclass_fields__})


class Tokenize:
    """map_batches UDF (actor): messages -> input_ids/labels with the chat template (untruncated)."""

    def __init__(self, tokenizer_dir: str, template: str):
        from doitray.data.templates import get_template
        from doitray.data.tokenizer import load_tokenizer

        self.template = get_template(template)
        self.tok = load_tokenizer(tokenizer_dir, self.template)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids, labels = [], []
        for msgs in batch["messages"].to_pylist():
            enc = self.template.encode(self.tok, msgs)
            ids.append(enc.input_ids)
            labels.append(enc.labels)
        keep = [c for c in ("part", "ability", "order_key", "id") if c in batch.column_names]
        return pa.table({**{c: batch[c] for c in keep}, "input_ids": pa.array(ids, pa.list_(pa.int32())),
                         "labels": pa.array(labels, pa.list_(pa.int32()))})


def _data_fingerprint(mixture_path: str) -> list:
    """What the data is, not where it lies (a copy on another node gets the same keys): the content key of the
    mixture or pool it belongs to, else a hash of its bytes."""
    path = Path(mixture_path)
    for sidecar in ("mixture.json", "pool.json"):
        meta = path.parent / sidecar
        if meta.exists():
            return [sidecar, json.loads(meta.read_text())["key"]]
    h = hashlib.sha256()
    for p in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return ["bytes", h.hexdigest()]


def tokens_key(mixture_path: str, tokenizer_dir: str, template: str) -> str:
    payload = [PIPELINE_VERSION, _data_fingerprint(mixture_path), tokenizer_hash(tokenizer_dir), template]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def packed_key(mixture_path: str, tokenizer_dir: str, template: str, seq_len: int, packed: bool) -> str:
    payload = [tokens_key(mixture_path, tokenizer_dir, template), int(seq_len), bool(packed)]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def _tokenize_on_ray(path: str, tokenizer_dir: str, template: str, *, batch_size: int,
                     concurrency: int | tuple[int, int], override_num_blocks: int | None) -> pa.Table:
    import ray.data

    from doitray.data.sampling import local_dataset

    lo, hi = (concurrency, concurrency) if isinstance(concurrency, int) else concurrency
    ds = local_dataset(path, override_num_blocks)
    ds = ds.map_batches(Tokenize, fn_constructor_kwargs={"tokenizer_dir": str(tokenizer_dir), "template": template},
                        batch_size=batch_size, batch_format="pyarrow", num_cpus=1,
                        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi))
    return pa.concat_tables([b for b in ray.get(ds.to_arrow_refs()) if b.num_rows])


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def tokenize_records(records_path: str, tokenizer_dir: str, template: str, cache_dir: str | os.PathLike, *,
                     batch_size: int = 256, concurrency: int | tuple[int, int] = (1, 2)) -> str:
    """Tokenize every record of a pool once, via Ray Data; returns the cached Parquet (id, input_ids, labels).

    A study does this once before its cells run, so each cell's mixture only looks its rows up
    (``tokenize(..., pretokenized=...)``) instead of starting a tokenization pipeline of its own.
    """
    path = Path(cache_dir) / "tokens" / f"records-{tokens_key(records_path, tokenizer_dir, template)}.parquet"
    if not path.exists():
        t = _tokenize_on_ray(records_path, tokenizer_dir, template, batch_size=batch_size, concurrency=concurrency,
                             override_num_blocks=None)
        _write_atomic(t.select(["id", "input_ids", "labels"]), path)
    return str(path)


def _look_up(mixture_path: str, pretokenized: str) -> pa.Table | None:
    """The mixture's rows from a pre-tokenized pool (upsampled copies ``<id>#r<k>`` share their id's tokens)."""
    import pyarrow.compute as pc

    mix = pq.read_table(mixture_path)
    mix = mix.select([c for c in ("part", "ability", "order_key", "id") if c in mix.column_names])
    base = pc.replace_substring_regex(mix["id"], pattern=r"#r\d+$", replacement="")
    tok = pq.read_table(pretokenized, columns=["id", "input_ids", "labels"], memory_map=True)
    idx = pc.index_in(base, value_set=tok["id"])
    if idx.null_count:
        return None
    rows = tok.take(idx)
    return mix.append_column("input_ids", rows["input_ids"]).append_column("labels", rows["labels"])


def tokenize(mixture_path: str, tokenizer_dir: str, template: str, cache_dir: str | os.PathLike, *,
             batch_size: int = 256, concurrency: int | tuple[int, int] = (1, 2),
             override_num_blocks: int | None = None, pretokenized: str | None = None) -> pa.Table:
    """Tokenized examples (untruncated ids and labels) in the mixture's canonical order, via Ray Data.

    With ``pretokenized`` (from ``tokenize_records`` of the pool the mixture was drawn from, same tokenizer
    and template) the rows are looked up there instead. Cached once per (data, tokenizer, template) under
    ``cache_dir/tokens/<key>.parquet``.
    """
    path = Path(cache_dir) / "tokens" / f"{tokens_key(mixture_path, tokenizer_dir, template)}.parquet"
    if path.exists():
        return pq.read_table(path)
    t = _look_up(str(mixture_path), pretokenized) if pretokenized else None
    if t is None:
        t = _tokenize_on_ray(mixture_path, tokenizer_dir, template, batch_size=batch_size, concurrency=concurrency,
                             override_num_blocks=override_num_blocks)
    order = [(c, "ascending") for c in ("part", "ability", "order_key", "id") if c in t.column_names]
    t = t.sort_by(order)
    _write_atomic(t, path)
    return t


def tokenize_and_pack(mixture_path, tokenizer_dir: str, template: str, seq_len: int, cache_dir: str | os.PathLike,
                      *, pack_rows: bool = True, batch_size: int = 256, concurrency: int | tuple[int, int] = (1, 2),
                      override_num_blocks: int | None = None, pretokenized: str | None = None) -> Packed:
    """Packed rows of a mixture (a ``Mixture`` or its Parquet path), cached under ``cache_dir/packed``."""
    from doitray.data.tokenizer import load_tokenizer

    mixture_path = str(getattr(mixture_path, "path", mixture_path))
    if seq_len < 8:
        raise ValueError(f"seq_len must be >= 8, got {seq_len}")
    key = packed_key(mixture_path, tokenizer_dir, template, seq_len, pack_rows)
    out = Path(cache_dir) / "packed" / key
    if (out / "packed.json").exists():
        return Packed.load(out)
    t = tokenize(mixture_path, tokenizer_dir, template, cache_dir, batch_size=batch_size, concurrency=concurrency,
                 override_num_blocks=override_num_blocks, pretokenized=pretokenized)
    examples, n_dropped, n_truncated = [], 0, 0
    for ids, labels in zip(t["input_ids"].to_pylist(), t["labels"].to_pylist()):
        if len(ids) > seq_len:  # right truncation, as DoIT does
            ids, labels = ids[:seq_len], labels[:seq_len]
            n_truncated += 1
        if not any(x != -100 for x in labels):
            n_dropped += 1
            continue
        examples.append((ids, labels))
    if not examples:
        raise ValueError(f"no example of {mixture_path} has a trainable token at seq_len={seq_len}")
    from doitray.data.templates import get_template

    tok = load_tokenizer(tokenizer_dir, get_template(template))  # same vocabulary as the Tokenize actors
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    cols, stats = pack(examples, seq_len, pad_id, packed=pack_rows)
    return _write_packed(out, cols, stats, n_truncated=n_truncated, n_dropped=n_dropped, tokenizer=str(tokenizer_dir),
                         template=template, packed=pack_rows)


def _write_packed(out: Path, cols: dict, stats, **info) -> Packed:
    """Packed rows as ``out/data/part-*.parquet`` with ``out/packed.json`` beside them, written atomically."""
    key = out.name
    tmp = out.with_name(f"{key}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    for f, start in enumerate(range(0, stats.n_rows, ROWS_PER_FILE)):
        sl = slice(start, start + ROWS_PER_FILE)
        table = pa.table({c: (pa.array(list(v[sl]), pa.list_(pa.int32())) if v.ndim == 2 else pa.array(v[sl], pa.int32()))
                          for c, v in cols.items()})
        pq.write_table(table, tmp / "data" / f"part-{f:05d}.parquet")
    seq_len = int(cols["input_ids"].shape[1])
    meta = Packed(path=str(out / "data"), key=key, seq_len=seq_len, n_rows=stats.n_rows, n_examples=stats.n_examples,
                  n_tokens=stats.n_tokens, n_loss_tokens=stats.n_loss_tokens, pad_fraction=stats.pad_fraction, **info)
    (tmp / "packed.json").write_text(json.dumps(asdict(meta), indent=1))
    try:
        os.replace(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return Packed.load(out)


# -- plain text (pretraining): no template, the loss on every token -------------------------------------------
class TokenizeText:
    """map_batches UDF (actor): ``text`` -> input_ids = labels (the document's tokens, then EOS)."""

    def __init__(self, tokenizer_dir: str):
        from doitray.data.tokenizer import load_tokenizer

        self.tok = load_tokenizer(tokenizer_dir)
        self.eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []

    def __call__(self, batch: pa.Table) -> pa.Table:
        enc = self.tok(batch["text"].to_pylist(), add_special_tokens=False)["input_ids"]
        ids = [list(e) + self.eos for e in enc]
        return pa.table({"order_key": batch["order_key"], "input_ids": pa.array(ids, pa.list_(pa.int32())),
                         "labels": pa.array(ids, pa.list_(pa.int32()))})


def pack_text(corpus_path: str | os.PathLike, tokenizer_dir: str, seq_len: int, cache_dir: str | os.PathLike, *,
              max_tokens: int | None = None, batch_size: int = 1024,
              concurrency: int | tuple[int, int] = (1, 2)) -> Packed:
    """Packed rows of a plain-text corpus (JSONL, one ``{"text": ...}`` per line), tokenized via Ray Data
    without a chat template; labels are the input ids (the loss is on every token). A document longer than
    ``seq_len`` is cut into ``seq_len`` pieces (nothing is dropped); with ``max_tokens`` the documents after the
    first ``max_tokens`` tokens are left out. Cached under ``cache_dir/packed/<key>`` like ``tokenize_and_pack``."""
    import ray.data

    from doitray.data.tokenizer import load_tokenizer

    corpus_path = str(corpus_path)
    payload = [PIPELINE_VERSION, "text", _data_fingerprint(corpus_path), tokenizer_hash(tokenizer_dir),
               int(seq_len), max_tokens]
    key = hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "packed" / key
    if (out / "packed.json").exists():
        return Packed.load(out)
    texts = [json.loads(line)["text"] for line in Path(corpus_path).read_text(encoding="utf-8").splitlines() if line]
    table = pa.table({"order_key": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts)})
    lo, hi = (concurrency, concurrency) if isinstance(concurrency, int) else concurrency
    n = max(1, min(hi, -(-len(texts) // batch_size)))
    step = -(-len(texts) // n)
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(texts), step)])
    ds = ds.map_batches(TokenizeText, fn_constructor_kwargs={"tokenizer_dir": str(tokenizer_dir)},
                        batch_size=batch_size, batch_format="pyarrow", num_cpus=1,
                        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi))
    t = pa.concat_tables([b for b in ray.get(ds.to_arrow_refs()) if b.num_rows]).sort_by("order_key")
    examples, total, n_split = [], 0, 0
    for ids in t["input_ids"].to_pylist():
        if max_tokens is not None and total >= max_tokens:
            break
        n_split += len(ids) > seq_len
        for i in range(0, len(ids), seq_len):
            piece = ids[i:i + seq_len]
            if len(piece) > 1:
                examples.append((piece, piece))
                total += len(piece)
    if not examples:
        raise ValueError(f"corpus {corpus_path} has no document to train on")
    tok = load_tokenizer(tokenizer_dir)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    cols, stats = pack(examples, seq_len, pad_id)
    return _write_packed(out, cols, stats, n_truncated=n_split, n_dropped=0, tokenizer=str(tokenizer_dir),
                         template="none")
