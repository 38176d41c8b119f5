"""Builder of 3-choice perplexity-ranking items for corpora that only have reference answers.

For abilities scored by ranking (the registry's ``question_format == "rank"``: DoIT code, creative
writing, role-play), an item of an evaluation split without ``choices`` becomes a rank item: the prompt
is its messages without the final assistant reply, ``choices`` = [gold, neg1, neg2] where the negatives
are the reference answers of two other items of the same (source, split, ability), picked in the order
of a hash of (item id, other id) — deterministic, independent of file order.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Iterable, Iterator

from doitray import abilities
from doitray.records import Quarantine

N_NEGATIVES = 2


def _h(a: str, b: str) -> str:
    return hashlib.sha1(f"{a}\x1f{b}".encode()).hexdigest()


def needs_ranking(rec: dict, splits: Iterable[str]) -> bool:
    return (rec["split"] in tuple(splits) and not rec.get("choices") and abilities.is_known(rec["ability"])
            and abilities.get(rec["ability"]).question_format == "rank"
            and bool(rec["messages"]) and isinstance(rec["messages"][-1], dict)
            and rec["messages"][-1].get("role") == "assistant")


def build_rank_items(records: list[dict], q: Quarantine, *, splits: Iterable[str] = ("valid", "test"),
                     source: str = "") -> Iterator[dict]:
    """``records`` with the rank items built (others unchanged, same order)."""
    splits = tuple(splits)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if needs_ranking(r, splits):
            groups[(r["source"], r["split"], r["ability"])].append(r)
    built: dict[str, dict | None] = {}
    for members in groups.values():
        golds = {r["id"]: str(r["messages"][-1]["content"]).strip() for r in members}
        for r in members:
            gold = golds[r["id"]]
            negs: list[str] = []
            for oid in sorted((o for o in golds if o != r["id"]), key=lambda o: _h(r["id"], o)):
                text = golds[oid]
                if text and text != gold and text not in negs:
                    negs.append(text)
                if len(negs) == N_NEGATIVES:
                    break
            if len(negs) < N_NEGATIVES or not gold:
                built[r["id"]] = None
                meta = json.loads(r["meta"])
                q.add(source=source, file=meta.get("file", ""), line=meta.get("line", 0),
                      reason="missing field: choices (too few distinct answers to draw ranking negatives from)",
                      raw=r["messages"])
                continue
            meta = json.loads(r["meta"])
            meta["rank_built"] = True
            built[r["id"]] = {**r, "messages": r["messages"][:-1], "question_format": "rank",
                              "choices": [gold, *negs], "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True)}
    for r in records:
        if r["id"] in built:
            if built[r["id"]] is not None:
                yield built[r["id"]]
        else:
            yield r
