"""Packing tokenized examples into fixed-length rows without attention across example boundaries.

Each row holds whole examples back to back; ``position_ids`` restart at 0 at every example, which the
train loop turns into a block-diagonal (document) mask; the tail is padding (pad id, label -100,
position 0). Examples are placed by best-fit decreasing (longest first, into the fullest row that still
has room), which is deterministic for a given input order and keeps the pad fraction small.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from doitray.data.templates import IGNORE_INDEX


@dataclass
class PackStats:
    n_rows: int
    n_examples: int
    n_tokens: int
    n_loss_tokens: int
    pad_fraction: float


def _bins_best_fit(lengths: list[int], seq_len: int) -> list[list[int]]:
    """Example indices per row: best-fit decreasing (ties broken by input order)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        n = lengths[i]
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            cap, b = free.pop(j)
        else:
            cap, b = seq_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if cap - n > 0:
            bisect.insort(free, (cap - n, b))
    return bins


def pack(examples: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int, *,
         packed: bool = True) -> tuple[dict[str, np.ndarray], PackStats]:
    """Rows (columns input_ids, labels, position_ids [n_rows, seq_len] int32; n_tokens, n_loss_tokens,
    n_examples [n_rows] int32) from (input_ids, labels) examples each at most ``seq_len`` long.

    ``packed=False`` puts one example per row (the baseline the pad fraction is compared with).
    """
    lengths = [len(ids) for ids, _ in examples]
    if any(n > seq_len for n in lengths):
        raise ValueError(f"an example is longer than seq_len={seq_len}; truncate before packing")
    bins = _bins_best_fit(lengths, seq_len) if packed else [[i] for i in range(len(examples))]
    n = len(bins)
    ids = np.full((n, seq_len), pad_id, dtype=np.int32)
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int32)
    pos = np.zeros((n, seq_len), dtype=np.int32)
    n_tok = np.zeros(n, dtype=np.int32)
    n_loss = np.zeros(n, dtype=np.int32)
    n_ex = np.zeros(n, dtype=np.int32)
    for r, members in enumerate(bins):
        off = 0
        for i in sorted(members):  # within a row keep the input order
            e_ids, e_lab = examples[i]
            k = len(e_ids)
            ids[r, off:off + k] = e_ids
            labels[r, off:off + k] = e_lab
            pos[r, off:off + k] = np.arange(k, dtype=np.int32)
            off += k
        n_tok[r] = off
        n_loss[r] = int((labels[r] != IGNORE_INDEX).sum())
        n_ex[r] = len(members)
    total = int(n_tok.sum())
    stats = PackStats(n_rows=n, n_examples=len(examples), n_tokens=total, n_loss_tokens=int(n_loss.sum()),
                      pad_fraction=1.0 - total / (n * seq_len) if n else 0.0)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "n_tokens": n_tok, "n_loss_tokens": n_loss,
            "n_examples": n_ex}, stats


def document_boundaries(position_ids: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each packed example in one row (padding excluded is the caller's business)."""
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return [(starts[j], starts[j + 1]) for j in range(len(starts) - 1)]
