"""Sources and pools: what to read (``SourceSpec``) and everything read, validated and cached (``Pool``).

``load_pool`` reads every source (all splits), validates each record (``records.validate_record``),
quarantines bad rows and duplicate ids with their file, line and reason, and writes one Parquet of
records plus one of the quarantine under ``cache_dir/pools/<key>/``, where ``key`` hashes the source
specs and the files' sizes and mtimes. A second call with unchanged inputs reads ``pool.json`` only.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from doitray import abilities
from doitray.scratch import fetch, is_remote, remote_listing
from doitray.records import CONSTRUCTIONS, SPLITS, Quarantine, RejectedRowsError, to_table, validate_record

POOL_VERSION = 1
FORMATS = ("doit", "alpaca", "sharegpt", "gsm8k", "humaneval", "mbpp", "cmmlu", "agieval", "c3", "jsonl",
           "parquet", "synthetic")


class SourceSpec(BaseModel):
    """One data source: a format, a local path, and overrides (ability, construction, split, fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    format: Literal[FORMATS]  # type: ignore[valid-type]
    path: str | None = None
    ability: str | None = None
    construction: Literal["curated", "synthetic"] = "curated"
    split: Literal["train", "valid", "test"] | None = None
    field_map: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ability")
    @classmethod
    def _known_ability(cls, v: str | None) -> str | None:
        if v is not None and not abilities.is_known(v):
            raise ValueError(f"unknown ability {v!r}; known: {', '.join(abilities.names())}")
        return abilities.canonical(v) if v is not None else None

    def model_post_init(self, __context: Any) -> None:
        if self.format != "synthetic" and not self.path:
            raise ValueError(f"source {self.name!r}: path is required for format {self.format!r}")
        if self.format == "synthetic":
            from doitray.data.synthetic import OPTIONS

            unknown = sorted(set(self.options) - set(OPTIONS))
            if unknown:
                raise ValueError(f"source {self.name!r}: unknown synthetic option(s) {unknown}; allowed: "
                                 f"{', '.join(OPTIONS)}")


@dataclass
class Pool:
    """Every record of a list of sources, validated, in one Parquet file (``path``)."""

    path: str
    key: str
    counts: dict[str, int]  # "split/ability/construction" -> rows
    quarantine_counts: dict[str, int]  # reason keyword -> rows
    n_rejected: int
    quarantine_path: str = ""
    sources: list[dict] = field(default_factory=list)
    custom_abilities: list[dict] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        return sum(self.counts.values())

    def abilities(self, split: str | None = None) -> list[str]:
        """Abilities present (in registry order, then alphabetical), optionally in one split."""
        present = {k.split("/")[1] for k in self.counts if split is None or k.split("/")[0] == split}
        order = {n: i for i, n in enumerate(abilities.names())}
        return sorted(present, key=lambda a: (order.get(a, 10**6), a))

    def count(self, split: str | None = None, ability: str | None = None, construction: str | None = None) -> int:
        tot = 0
        for k, v in self.counts.items():
            s, a, c = k.split("/")
            if (split in (None, s)) and (ability in (None, a)) and (construction in (None, c)):
                tot += v
        return tot

    @classmethod
    def load(cls, pool_dir: str | os.PathLike) -> "Pool":
        """A pool from its directory (re-registers custom abilities such as ``ceval_*``)."""
        info = json.loads((Path(pool_dir) / "pool.json").read_text())
        # relocatable: a copy fetched onto another node reads its own files
        info.update(path=str(Path(pool_dir) / "records.parquet"), quarantine_path=str(Path(pool_dir) / "quarantine.parquet"))
        pool = cls(**info)
        for a in pool.custom_abilities:
            if not abilities.is_known(a["name"]):
                abilities.register(abilities.Ability(**{**a, "aliases": tuple(a.get("aliases", ()))}))
        return pool


def _fingerprint(spec: SourceSpec) -> list:
    if spec.format == "synthetic":
        from doitray.data import synthetic
        return [synthetic.VERSION]
    if is_remote(spec.path):
        return remote_listing(spec.path)
    root = Path(spec.path)
    if not root.exists():
        raise FileNotFoundError(f"source {spec.name!r}: path {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p.relative_to(root)) if p != root else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def pool_key(sources: list[SourceSpec]) -> str:
    h = hashlib.sha256(json.dumps([POOL_VERSION] + [[s.model_dump(mode="json"), _fingerprint(s)] for s in sources],
                                  sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _resolve(spec: SourceSpec, cache_dir: Path) -> SourceSpec:
    """A synthetic source becomes a DoIT source over the generated suite (generated once, cached); a source in
    object storage, this node's copy of it."""
    if is_remote(spec.path):
        return spec.model_copy(update={"path": fetch(spec.path)})
    if spec.format != "synthetic":
        return spec
    from doitray.data import synthetic
    out = synthetic.generate_cached(cache_dir / "synthetic", **spec.options)
    return spec.model_copy(update={"format": "doit", "path": str(out), "options": {}})


def read_sources(sources: list[SourceSpec], cache_dir: str | os.PathLike) -> tuple[list[dict], Quarantine]:
    """Read and validate every source: (good records, quarantine). Duplicate ids are quarantined."""
    from doitray.data.readers import READERS

    q = Quarantine()
    good: list[dict] = []
    seen: dict[str, str] = {}
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    for spec in sources:
        spec = _resolve(spec, Path(cache_dir))
        for rec in READERS[spec.format](spec, q):
            meta = json.loads(rec["meta"]) if isinstance(rec.get("meta"), str) else {}
            where = dict(source=spec.name, file=str(meta.get("file", spec.path)), line=int(meta.get("line", 0)))
            reasons = validate_record(rec)
            if not reasons and rec["id"] in seen:
                reasons = [f"duplicate id: {rec['id']} (first at {seen[rec['id']]})"]
            if reasons:
                q.add(**where, reason="; ".join(reasons), raw={k: rec.get(k) for k in ("ability", "messages", "answer")})
                continue
            seen[rec["id"]] = f"{where['file']}:{where['line']}"
            good.append(rec)
    return good, q


def load_pool(sources: list[SourceSpec], cache_dir: str | os.PathLike, strict: bool = False) -> Pool:
    """Read, validate and cache ``sources`` as one pool; ``strict`` makes any rejected row an error."""
    sources = [s if isinstance(s, SourceSpec) else SourceSpec.model_validate(s) for s in sources]
    if not sources:
        raise ValueError("load_pool needs at least one source")
    cache_dir = Path(cache_dir)
    key = pool_key(sources)
    out = cache_dir / "pools" / key
    if (out / "pool.json").exists():
        pool = Pool.load(out)
        if strict and pool.n_rejected:
            raise RejectedRowsError(Quarantine(pq.read_table(pool.quarantine_path).to_pylist()))
        return pool
    builtin = set(abilities.names())
    recs, q = read_sources(sources, cache_dir)
    if strict and len(q):
        raise RejectedRowsError(q)
    counts: dict[str, int] = {}
    for r in recs:
        k = f"{r['split']}/{r['ability']}/{r['construction']}"
        counts[k] = counts.get(k, 0) + 1
    custom = [{**asdict(abilities.get(a)), "aliases": list(abilities.get(a).aliases)}
              for a in sorted({r["ability"] for r in recs}) if a not in builtin and a in abilities.names()]
    tmp = out.with_name(f"{key}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(to_table(recs), tmp / "records.parquet")
    pq.write_table(q.to_table(), tmp / "quarantine.parquet")
    pool = Pool(path=str(out / "records.parquet"), key=key, counts=dict(sorted(counts.items())),
                quarantine_counts=q.by_reason(), n_rejected=len(q), quarantine_path=str(out / "quarantine.parquet"),
                sources=[s.model_dump(mode="json") for s in sources], custom_abilities=custom)
    (tmp / "pool.json").write_text(json.dumps(asdict(pool), indent=1, ensure_ascii=False))
    try:
        os.replace(tmp, out)
    except OSError:  # a concurrent writer finished first; its content is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return pool


def load_records(pool: Pool, split: str | None = None, abilities: list[str] | None = None) -> list[dict]:
    """The pool's records (optionally one split and some abilities), sorted by id for stable order."""
    filters = []
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        filters.append(("split", "=", split))
    if abilities is not None:
        filters.append(("ability", "in", list(abilities)))
    table = pq.read_table(pool.path, filters=filters or None)
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def read_quarantine(pool: Pool) -> list[dict]:
    return pq.read_table(pool.quarantine_path).to_pylist() if pool.quarantine_path else []


__all__ = ["FORMATS", "CONSTRUCTIONS", "SourceSpec", "Pool", "load_pool", "load_records", "read_quarantine",
           "read_sources", "pool_key"]
