"""Work done once per study on the driver before any cell runs: the data pool, the tokenizer, the pool
tokenized once (cells look their rows up instead of each running a tokenization pipeline) and every model level
resolved once (a prepared HF dir with the template's tokens, or a config to build).

Where it lives: the driver works in ``cache_dir`` and what the cells need is shared through ``cache_uri``. With
local storage both are ``<storage>/cache`` (a folder every process sees). With object storage the driver works in
its node's scratch and publishes the results under ``<storage>/cache``; each cell fetches them into its own
node's scratch (``doitray.scratch``): nodes share nothing but the storage. ``DOITRAY_CACHE_DIR`` names a shared
file system instead (both folders there). Each cell's own mixtures and packed data are cached under content
hashes in its node's folder, so cells that need the same data reuse it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from doitray.data.sources import Pool, SourceSpec, load_pool, load_records
from doitray.data.templates import get_template
from doitray.data.tokenizer import cached_tokenizer
from doitray.scratch import fetch, is_remote, join, publish, scratch_root
from doitray.study.spec import StudyFileError, StudySpec
from doitray.store import ResultsStore
from doitray.study.cells import Cell, expand_cells
from doitray.study.stages import stage_recipes


def cache_uri(spec: StudySpec, store: ResultsStore | None = None) -> str:
    """Where a study's derived data is shared: ``$DOITRAY_CACHE_DIR/<study>`` or ``<storage>/cache``. Without
    ``store`` it is derived from ``spec.storage`` alone, without opening the storage (``study plan``)."""
    if os.environ.get("DOITRAY_CACHE_DIR"):
        return os.path.join(os.environ["DOITRAY_CACHE_DIR"], spec.name)
    uri = store.uri if store is not None else spec.storage
    if is_remote(uri):
        return join(uri, "cache")
    root = store.root if store is not None else os.path.abspath(os.path.expanduser(uri)).rstrip("/")
    return os.path.join(root, "cache")


def local_cache(shared: str, study: str) -> str:
    """This node's working folder for a study whose shared cache is ``shared``: the same folder when it is a
    local path, else ``<scratch>/studies/<study>``."""
    return str(scratch_root() / "studies" / study) if is_remote(shared) else shared


def cache_dir(spec: StudySpec, store: ResultsStore | None = None) -> str:
    """The driver's working folder for a study (see ``cache_uri`` and ``local_cache``)."""
    return local_cache(cache_uri(spec, store), spec.name)


def share(local: str, work: str, shared: str) -> str:
    """``local`` (made in the working folder ``work``) as every node reaches it: published under ``shared``
    at the same relative path (a path outside ``work`` goes under ``external/``)."""
    if not is_remote(shared):
        return local
    rel = os.path.relpath(local, work)
    if rel.startswith(".."):
        rel = f"external/{hashlib.sha256(os.path.abspath(local).encode()).hexdigest()[:12]}-{os.path.basename(local)}"
    return publish(local, join(shared, *Path(rel).parts))


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
        return fetch(spec.tokenizer.path)  # a storage URI: this node's copy
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


def prepare_models(spec: StudySpec, tokenizer: str, work: str, shared: str,
                   levels: set[str] | None = None) -> dict[str, dict]:
    """Every model level resolved once per study (``models.loading.resolve_model``) and shared: ``{level:
    ModelSource dict}`` whose folders every node can fetch. A prepared copy of a model in object storage
    publishes only its new files (resized embeddings, config, tokenizer); the rest is linked to the original. A
    level with ``init: {pretrain: ...}`` becomes its base, pretrained once (``study.pretrain``; reused from the
    shared cache when it was trained before). ``levels``: only these (the levels of the cells still to run)."""
    from doitray.models.loading import ModelSource, level_source, resolve_model

    out = {}
    for name, level in spec.models.items():
        if levels is not None and name not in levels:
            continue
        model, model_path = level_source(level.model_dump())
        src = resolve_model(model, template=spec.template, cache_dir=os.path.join(work, "models"),
                            model_path=model_path, tokenizer_dir=tokenizer)
        origin = model_path or model
        moved = {"tokenizer_dir": share(src.tokenizer_dir, work, shared)}
        if src.hf_dir:
            links = ({p.name: join(origin, p.name) for p in Path(src.hf_dir).iterdir() if p.is_symlink()}
                     if is_remote(origin) and is_remote(shared) else {})
            moved["hf_dir"] = _share_dir(src.hf_dir, work, shared, links)
            if src.tokenizer_dir == src.hf_dir:
                moved["tokenizer_dir"] = moved["hf_dir"]
        out[name] = ModelSource(**{**src.as_dict(), **moved}).as_dict()
    if any(spec.models[name].pretrain is not None for name in out):
        from doitray.study.pretrain import pretrain_bases  # a pretrain level: its config becomes a trained base

        out.update(pretrain_bases(spec, out, tokenizer, work, shared))
    return out


def _share_dir(local: str, work: str, shared: str, links: dict[str, str]) -> str:
    if not is_remote(shared):
        return local
    return publish(local, join(shared, *Path(os.path.relpath(local, work)).parts), links=links)


def prepare_study(spec: StudySpec, store: ResultsStore, cells: list[Cell] | None = None) -> dict:
    """Load the pool, the tokenizer, the pool's tokens and the models of ``cells`` (default: every level) once;
    returns what every trial needs to find them (paths every node can open or fetch)."""
    shared = cache_uri(spec, store)
    work = local_cache(shared, spec.name)
    os.makedirs(work, exist_ok=True)
    pool = study_pool(spec, work)
    check_against_pool(spec, pool)
    from doitray.data.pipeline import tokenize_records

    tokenizer = study_tokenizer(spec, pool, work)
    tokens = tokenize_records(pool.path, tokenizer, spec.template, work)
    tok_shared = spec.tokenizer.path if spec.tokenizer.path and is_remote(spec.tokenizer.path) else None
    return {"pool": share(os.path.dirname(pool.path), work, shared),
            "tokenizer": tok_shared or share(tokenizer, work, shared), "tokens": share(tokens, work, shared),
            "models": prepare_models(spec, tokenizer, work, shared,
                                     levels=None if cells is None else {c.levels["model"] for c in cells}),
            "cache": shared, "study": spec.name}


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
