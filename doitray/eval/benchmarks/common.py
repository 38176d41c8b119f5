"""What every benchmark builder shares: finding its files, multiple-choice items, the seeded stratified subset."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from doitray.eval.stats import stable_seed
from doitray.records import Quarantine, make_record

LETTERS = "ABCDEFGHIJ"
PASS_SPLIT = "test"  # the cell pass a benchmark suite is scored in (checkpoint selection reads the pool only)


class BenchmarkError(ValueError):
    """A benchmark folder that cannot be used as given (one line naming the path and the fix)."""


def need_dir(path: str | Path, kind: str, *, holds: str) -> Path:
    """``path`` as a folder that exists, else a ``BenchmarkError`` saying what it should hold."""
    p = Path(path)
    if not p.exists():
        raise BenchmarkError(f"{kind}: {p} does not exist — give the benchmark's folder ({holds})")
    return p


def files_under(root: Path, pattern: str, kind: str, holds: str) -> list[Path]:
    """The files matching ``pattern`` under ``root`` (sorted), or a ``BenchmarkError`` naming the layout."""
    found = [root] if root.is_file() else sorted(root.glob(pattern))
    if not found:
        raise BenchmarkError(f"{kind}: no {pattern} under {root} — give the folder as its authors publish it "
                             f"({holds})")
    return found


def mc_record(*, kind: str, key: tuple, split: str, messages: list[dict], gold: str, meta: dict,
              ability: str | None = None, metric: str = "choice", logits: bool = True) -> dict:
    """A multiple-choice item scored by the first answer token's letter log-probabilities (``logits``)."""
    m = {**meta, "metric": metric, "benchmark": kind}
    if logits and metric == "choice":
        m["choice_mode"] = "logits"
    return make_record(id=f"{kind}-" + "-".join(str(k) for k in key), ability=ability or kind, source=kind,
                       split=split, construction="curated", question_format="generate",
                       messages=[*messages, {"role": "assistant", "content": gold}], meta=m)


def letters_of(gold: str, n_options: int) -> str | None:
    """``gold`` when it is option letters (each at most once, in range), else None."""
    g = gold.strip()
    ok = g and all(c in LETTERS[:n_options] for c in g) and len(set(g)) == len(g)
    return "".join(sorted(g)) if ok else None


def stratified_subset(records: list[dict], limit: int | None, group: Callable[[dict], str], name: str) -> list[dict]:
    """At most ``limit`` records: per group, a share proportional to its size (largest remainder, at least one
    per group while the limit allows), drawn with a seed fixed by the suite ``name`` — the same items for every
    cell and every run. Order: by group, then by id."""
    if not limit or len(records) <= limit:
        return records
    by: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["id"]):
        by.setdefault(group(r), []).append(r)
    total = len(records)
    quota = {g: limit * len(rs) / total for g, rs in by.items()}
    take = {g: int(q) for g, q in quota.items()}
    if limit >= len(by):
        for g in by:
            take[g] = max(1, take[g])
    left = limit - sum(take.values())
    for g in sorted(by, key=lambda g: (-(quota[g] - int(quota[g])), g)):
        if left <= 0:
            break
        if take[g] < len(by[g]):
            take[g] += 1
            left -= 1
    while sum(take.values()) > limit:  # the at-least-one rule overshot: trim the largest groups
        g = max(take, key=lambda g: (take[g], g))
        take[g] -= 1
    out = []
    for g in sorted(by):
        rng = random.Random(stable_seed("limit", name, g))
        out += sorted(rng.sample(by[g], min(take[g], len(by[g]))), key=lambda r: r["id"])
    return out


def quarantine_rows(q: Quarantine) -> list[dict]:
    """A reader's rejected rows without their raw text (the suite keeps file, line and reason)."""
    return [{k: r[k] for k in ("file", "line", "reason")} for r in q.rows]
