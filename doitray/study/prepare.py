"""Work done once per study on the driver before any cell runs: the data pool, the tokenizer and the
pool tokenized once (cells look their rows up instead of each running a tokenization pipeline).

Cells share both through the cache folder (``<storage>/cache`` for local storage). Each cell's own
mixtures and packed data are cached there too, under content hashes, so cells that need the same
data reuse it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from doitray.data.sources import Pool, SourceSpec, load_pool, load_records
from doitray.data.templates import get_template
from doitray.data.tokenizer import cached_tokenizer
from doitray.study.spec import StudyFileError, StudySpec
from doitray.store import ResultsStore
from doitray.study.cells import Cell, expand_cells
from doitray.study.stages import stage_recipes


def cache_dir(spec: StudySpec, store: ResultsStore | None = None) -> str:
    """Where a study's derived data lives: beside its results locally; a node-local folder otherwise.

    With object-store storage every node must see the cache, which needs a shared file system: set
    ``DOITRAY_CACHE_DIR`` to a path on it (e.g. an NFS mount) on multi-node clusters. Without ``store`` the
    same folder is derived from ``spec.storage`` alone, without opening the storage (``study plan``).
    """
    if os.environ.get("DOITRAY_CACHE_DIR"):
        return os.path.join(os.environ["DOITRAY_CACHE_DIR"], spec.name)
    uri = store.uri if store is not None else spec.storage
    if "://" not in uri:
        root = store.root if store is not None else os.path.abspath(os.path.expanduser(uri)).rstrip("/")
        return os.path.join(root, "cache")
    return os.path.join(os.path.expanduser("~/.cache/doitray"), spec.name)


def source_specs(spec: StudySpec) -> list[SourceSpec]:
    try:
        return [SourceSpec(**s) for s in spec.sources]
    except Exception as e:  # pydantic names the field
        raise StudyFileError(f"sources: {e}") from None


def study_pool(spec: StudySpec, cache: str) -> Pool:
    pool = load_pool(source_specs(spec), cache)
    if not pool.count(split="train"):
        raise StudyFileError("sources: the pool has no training records")
    return pool


def study_tokenizer(spec: StudySpec, pool: Pool, cache: str) -> str:
    """The tokenizer directory every cell uses (template special tokens included)."""
    template = get_template(spec.template)
    if spec.tokenizer.path:
        return spec.tokenizer.path
    if spec.tokenizer.train_vocab_size:
        texts = [m["content"] for r in load_records(pool, split="train") for m in r["messages"]]
        return cached_tokenizer(texts, os.path.join(cache, "tokenizers"), vocab_size=spec.tokenizer.train_vocab_size,
                                template=template)
    from doitray.models.loading import export_tokenizer  # the model's own tokenizer, with our special tokens

    level = next(m for m in spec.models.values() if m.init == "pretrained" and (m.path or m.gguf))
    key = hashlib.sha256(f"{level.model_dump_json()}|{spec.template}".encode()).hexdigest()[:16]
    out = Path(cache) / "tokenizers" / f"model-{key}"
    if not (out / "tokenizer_config.json").exists():
        export_tokenizer(level.model_dump(), spec.template, str(out), os.path.join(cache, "models"))
    return str(out)


def prepare_study(spec: StudySpec, store: ResultsStore) -> dict:
    """Load the pool, the tokenizer and the pool's tokens once; returns what every trial needs to find them."""
    cache = cache_dir(spec, store)
    os.makedirs(cache, exist_ok=True)
    pool = study_pool(spec, cache)
    check_against_pool(spec, pool)
    from doitray.data.pipeline import tokenize_records

    tokenizer = study_tokenizer(spec, pool, cache)
    return {"pool": os.path.dirname(pool.path) if pool.path.endswith(".parquet") else pool.path,
            "tokenizer": tokenizer, "tokens": tokenize_records(pool.path, tokenizer, spec.template, cache),
            "cache": cache}


def stage_quotas(content: dict, pool) -> list[tuple[str, dict[str, int]]]:
    """Examples per ability for each stage of a cell (raises ValueError when the pool is short)."""
    from doitray.data.sampling import available

    out = []
    for name, recipe in stage_recipes(content):
        q: dict[str, int] = {}
        for part in recipe.parts:
            for a, n in part.quotas(available(pool, part)).items():
                q[a] = q.get(a, 0) + n
        out.append((name, q))
    return out


def check_against_pool(spec: StudySpec, pool, cells: list[Cell] | None = None) -> None:
    """Reject the study before anything runs when a cell asks for more than the pool holds."""
    problems = []
    for c in cells or expand_cells(spec):
        try:
            stage_quotas(c.content, pool)
        except ValueError as e:
            problems.append(f"cell {c.cell_id} ({c.label()}): {e}")
    if problems:
        raise StudyFileError("the data cannot supply these cells (set upsample: true to repeat rows, or change "
                             "the levels):\n  " + "\n  ".join(problems[:20]))
