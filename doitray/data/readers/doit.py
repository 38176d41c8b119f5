"""DoIT-format reader: the released layout and the flat ``{train,valid,test}/<ability>.json`` layout.

Released layout (``curated/1000/<ability>_1000.json``, ``curated/full/<ability>_full.json``,
``curated/valid/…``, ``curated/test/…`` incl. ``ceval_*`` out-of-domain files, ``synthetic/<n>/…``):
the training files come from ``options.curated`` (``full`` when present, else ``1000``) and, for the
synthetic construction, from ``synthetic/<options.synthetic_size>`` (default: the largest). Flat layout:
``{train,valid,test}/<ability>.json``. A single file is read with ``spec.split`` (default ``train``).

Rows are JSON lines: ``messages``, ``type`` (the ability), ``idx``, ``question_format`` (0 generate,
1 rank with ``choices``, gold first), ``answer`` (math), optional top-level ``system`` (role-play).
Valid/test items of rank abilities without ``choices`` become 3-choice rank items (``ranking``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from doitray import abilities
from doitray.data.readers.common import iter_json_lines, list_files
from doitray.data.readers.ranking import build_rank_items
from doitray.records import Quarantine, make_id, make_record

_SPLIT_DIRS = {"train": "train", "valid": "valid", "test": "test"}
_STEM_SUFFIX = re.compile(r"_(full|1000|valid|test|train|synthetic|\d+)$")


def _release_files(root: Path, spec) -> list[tuple[Path, str, str]]:
    """(file, split, construction) for the released DoIT layout."""
    out: list[tuple[Path, str, str]] = []
    cur = root / "curated"
    subset = spec.options.get("curated") or ("full" if (cur / "full").is_dir() else "1000")
    if (cur / subset).is_dir():
        out += [(p, "train", "curated") for p in list_files(cur / subset, (".json", ".jsonl"))]
    for split in ("valid", "test"):
        if (cur / split).is_dir():
            out += [(p, split, "curated") for p in list_files(cur / split, (".json", ".jsonl"))]
    syn = root / "synthetic"
    if syn.is_dir() and spec.options.get("synthetic", True):
        sizes = sorted((d for d in syn.iterdir() if d.is_dir()), key=lambda d: int(d.name) if d.name.isdigit() else -1)
        want = spec.options.get("synthetic_size")
        chosen = [d for d in sizes if d.name == str(want)] if want is not None else sizes[-1:]
        if want is not None and not chosen:
            raise ValueError(f"source {spec.name!r}: options.synthetic_size={want!r} not among "
                             f"{[d.name for d in sizes]}")
        for d in chosen:
            out += [(p, "train", "synthetic") for p in list_files(d, (".json", ".jsonl"))]
    return out


def doit_files(spec) -> list[tuple[Path, str, str]]:
    """The files a DoIT-format source reads, each with its split and construction."""
    root = Path(spec.path)
    if root.is_file():
        return [(root, spec.split or "train", spec.construction)]
    if (root / "curated").is_dir() or (root / "synthetic").is_dir():
        files = _release_files(root, spec)
    else:
        files = [(p, split, spec.construction) for d, split in _SPLIT_DIRS.items() if (root / d).is_dir()
                 for p in list_files(root / d, (".json", ".jsonl"))]
    if not files:
        raise FileNotFoundError(f"source {spec.name!r}: no DoIT files under {root} (expected curated/… or "
                                f"train|valid|test/<ability>.json)")
    if spec.split:
        files = [f for f in files if f[1] == spec.split]
    return files


def _ability_for(spec, row: dict, path: Path, split: str, construction: str) -> str:
    stem = _STEM_SUFFIX.sub("", path.name.split(".")[0])
    if spec.ability:
        return spec.ability
    if stem.startswith("ceval_"):
        name = re.sub(r"_fshot$", "", stem)
        abilities.register_from_spec(name, metric="choice", chance=0.25,
                                     description="C-Eval out-of-domain subset (5-shot)")
        return name
    typ = row.get("type")
    if isinstance(typ, str) and abilities.is_known(typ):
        return abilities.canonical(typ)
    if construction == "synthetic" and not abilities.is_known(stem):
        return spec.options.get("synthetic_ability", "general")
    if typ is None and abilities.is_known(stem):
        return abilities.canonical(stem)
    return typ if isinstance(typ, str) else str(typ)


def messages_of(row: dict) -> tuple[list[dict] | None, str | None]:
    """A row's messages (with a top-level ``system`` prepended), or the reason they are unusable."""
    msgs = row.get("messages")
    if msgs is None:
        return None, "missing field: messages"
    if not isinstance(msgs, list):
        return None, f"wrong type: messages must be a list, got {type(msgs).__name__}"
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return None, f"missing field: messages[{i}] needs role and content"
        out.append({"role": m["role"], "content": m["content"]})
    system = row.get("system")
    if isinstance(system, str) and system.strip() and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": system})
    return out, None


def _question_format(v: Any) -> Any:
    return {0: "generate", 1: "rank", "0": "generate", "1": "rank"}.get(v, v) if v is not None else None


def read_doit(spec, q: Quarantine) -> Iterator[dict]:
    """Records of a DoIT-format source (see the module docstring)."""
    records: list[dict] = []
    root = Path(spec.path)
    for path, split, construction in doit_files(spec):
        rel = str(path.relative_to(root)) if path != root else path.name
        for line, row in iter_json_lines(path, spec.name, q):
            if not isinstance(row, dict):
                q.add(source=spec.name, file=rel, line=line, reason="wrong type: row must be a JSON object", raw=row)
                continue
            msgs, why = messages_of(row)
            if why:
                q.add(source=spec.name, file=rel, line=line, reason=why, raw=row)
                continue
            ability = _ability_for(spec, row, path, split, construction)
            answer = row.get("answer")
            if isinstance(answer, (int, float)) and not isinstance(answer, bool):
                answer = str(answer)
            idx = row.get("idx")
            meta = {"line": line, "file": rel}
            if idx is not None:
                meta["idx"] = idx
            if row.get("source"):
                meta["origin"] = row["source"]
            if row.get("type") is not None and row.get("type") != ability:
                meta["type"] = row["type"]
            if ability.startswith("ceval_"):
                meta["ood"] = True
            for k in ("metric", "complexity", "family", "corrupted"):
                if k in row:
                    meta[k] = row[k]
            qf = _question_format(row.get("question_format"))
            rec = make_record(
                id=make_id(spec.name, split, ability, idx if idx is not None else f"{rel}:{line}"),
                ability=ability, messages=msgs, source=spec.name, split=split, construction=construction,
                question_format=qf if qf is not None else None, choices=row.get("choices"), answer=answer,
                meta=meta)
            if qf is None:
                rec["question_format"] = (abilities.get(ability).question_format if abilities.is_known(ability)
                                          and split != "train" else "generate")
            records.append(rec)
    rank_splits = tuple(spec.options.get("rank_splits", ("valid", "test")))
    yield from build_rank_items(records, q, splits=rank_splits, source=spec.name)
