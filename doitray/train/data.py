"""Packed training data on a worker: read the rows once, then a deterministic global batch order.

Every rank reads the whole packed dataset (unsplit, through Ray Data) and computes the same seeded
permutation per epoch. Optimizer step ``s`` consumes global rows ``[s*G, (s+1)*G)`` of that order;
rank ``r`` of ``W`` takes every ``W``-th micro-batch of it. So the sequence of global batches — and
hence the trajectory — depends only on (data, seed, global batch), not on the worker count or on
where a run was interrupted and resumed. The last batch of an epoch is completed with empty rows
(labels all -100) so every rank runs the same number of forward passes (FSDP collectives).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100
COLUMNS = ("input_ids", "labels", "position_ids")


@dataclass
class PackedArrays:
    input_ids: np.ndarray      # [N, L] int64
    labels: np.ndarray
    position_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])


def _to_2d(col) -> np.ndarray:
    """A Ray tensor-extension column (already 2D) or a plain list column (object array of arrays)."""
    arr = np.asarray(col)
    if arr.dtype == object:
        arr = np.stack([np.asarray(x) for x in arr])
    return arr.astype(np.int64, copy=False)


def from_batches(batches) -> PackedArrays:
    """Concatenate numpy batches (dicts of columns) from a Ray Data iterator."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    for b in batches:
        missing = [c for c in COLUMNS if c not in b]
        if missing:
            raise ValueError(f"packed data lacks column(s) {missing}; the contract is {list(COLUMNS)}")
        for c in COLUMNS:
            parts[c].append(_to_2d(b[c]))
    if not parts["input_ids"]:
        raise ValueError("packed training data is empty")
    arrs = {c: np.concatenate(v) for c, v in parts.items()}
    if not (arrs["input_ids"].shape == arrs["labels"].shape == arrs["position_ids"].shape):
        raise ValueError("input_ids, labels and position_ids must have the same shape")
    return PackedArrays(**arrs)


def read_iterator(it, batch_size: int = 256) -> PackedArrays:
    return from_batches(it.iter_batches(batch_size=batch_size, batch_format="numpy"))


def read_table(path: str):
    """A packed Parquet directory (local path or ``s3://``/``gs://`` URI) as one Arrow table, files in name order."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    import ray.data.extensions  # noqa: F401  (registers Ray's tensor extension type with pyarrow)

    fs, base = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), os.path.abspath(path))
    if fs.get_file_info(base).type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        files = sorted(i.path for i in infos if i.is_file and i.path.endswith(".parquet"))
    else:
        files = [base]
    if not files:
        raise FileNotFoundError(f"no .parquet files under {path}")
    return pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=list(COLUMNS))


def read_path(path: str) -> PackedArrays:
    """Read a packed Parquet directory (local path or ``s3://``/``gs://`` URI) with pyarrow."""
    import pyarrow as pa

    table = read_table(path)
    cols = {}
    for c in COLUMNS:
        col = table.column(c).combine_chunks()
        # a Ray tensor-extension column converts to a 2-D array; a list column to an object array of rows
        cols[c] = col.to_numpy() if isinstance(col.type, pa.ExtensionType) else col.to_numpy(zero_copy_only=False)
    return from_batches([cols])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batch_rows(n: int, global_batch: int, seed: int, step: int) -> np.ndarray:
    """Row indices of optimizer step ``step`` (0-based); -1 marks an empty filler row."""
    spe = max(1, -(-n // global_batch))
    epoch, i = divmod(step, spe)
    rows = epoch_order(n, seed, epoch)[i * global_batch:(i + 1) * global_batch]
    if len(rows) < global_batch:
        rows = np.concatenate([rows, -np.ones(global_batch - len(rows), dtype=rows.dtype)])
    return rows


def rank_micro_batches(rows: np.ndarray, micro_batch: int, rank: int, world: int) -> list[np.ndarray]:
    """This rank's micro-batches of a global batch: micro-batch j of the batch goes to rank j % world."""
    micro = rows.reshape(-1, micro_batch)
    return [micro[j] for j in range(rank, len(micro), world)]


def gather(data: PackedArrays, idx: np.ndarray, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Rows ``idx`` as arrays; filler rows (-1) are pad tokens with no loss."""
    real = idx >= 0
    safe = np.where(real, idx, 0)
    ids, lab, pos = data.input_ids[safe].copy(), data.labels[safe].copy(), data.position_ids[safe].copy()
    ids[~real] = pad_id
    lab[~real] = IGNORE_INDEX
    pos[~real] = np.arange(data.seq_len)
    return {"input_ids": ids, "labels": lab, "position_ids": pos}


def shifted_targets(labels: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
    """Next-token targets: ``labels[t+1]`` for position t, -100 where t+1 starts a new packed example."""
    tgt = np.full_like(labels, IGNORE_INDEX)
    tgt[:, :-1] = labels[:, 1:]
    boundary = position_ids[:, 1:] == 0
    tgt[:, :-1][boundary] = IGNORE_INDEX
    return tgt


def count_loss_tokens(data: PackedArrays, rows: np.ndarray) -> int:
    real = rows[rows >= 0]
    if not len(real):
        return 0
    return int((shifted_targets(data.labels[real], data.position_ids[real]) != IGNORE_INDEX).sum())
