"""Stratified, seeded, nested sampling of a pool into a cell's mixture, on Ray Data.

Within each stratum (a part's rows of one ability) rows are ordered by ``sha1(seed, id)`` and the first
n are taken, so for a fixed seed the sample at volume n is a prefix — hence a subset — of the sample at
every larger volume, and the result depends on neither block order, worker count nor cluster size.
Upsampled rows (allowed only with ``Part.upsample``) cycle through the same order; their ids get a
``#r<k>`` suffix and ``upsampled`` is true. The mixture is written once to Parquet under
``cache_dir/mixtures/<key>/data`` (key = hash of pool key, recipe key, seed) and reused afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from doitray.data.recipes import Part, Recipe
from doitray.data.sources import Pool

SAMPLING_VERSION = 1


@dataclass
class Mixture:
    """A sampled mixture: Parquet records (``path``, a directory) plus the columns part, order_key, upsampled."""

    path: str
    key: str
    counts: dict[str, int]  # ability -> rows
    n: int
    seed: int
    pool_key: str
    recipe_key: str
    part_counts: list[dict[str, int]] = field(default_factory=list)
    n_upsampled: int = 0

    @classmethod
    def load(cls, mix_dir: str | os.PathLike) -> "Mixture":
        info = json.loads((Path(mix_dir) / "mixture.json").read_text()) | {"path": str(Path(mix_dir) / "data")}
        return cls(**{k: v for k, v in info.items() if k in cls.__dataclass_fields__})

    def read(self) -> pa.Table:
        """The mixture in its canonical order (part, ability, order_key, copy)."""
        t = pq.read_table(self.path)
        return t.sort_by([("part", "ascending"), ("ability", "ascending"), ("order_key", "ascending"),
                          ("id", "ascending")])


def order_key(seed: int, rid: str) -> str:
    return hashlib.sha1(f"{seed}\x1f{rid}".encode()).hexdigest()[:16]


def _mask(table: pa.Table, part: Part) -> pa.Array:
    m = pc.equal(table["split"], part.split)
    if part.construction is not None:
        m = pc.and_(m, pc.equal(table["construction"], part.construction))
    if part.sources is not None:
        m = pc.and_(m, pc.is_in(table["source"], value_set=pa.array(list(part.sources))))
    return m


def available(pool: Pool, part: Part) -> dict[str, int]:
    """Rows per ability that ``part`` selects from (before its quantity rule)."""
    t = pq.read_table(pool.path, columns=["split", "construction", "source", "ability"])
    t = t.filter(_mask(t, part))
    counts = t.group_by("ability").aggregate([("ability", "count")])
    return dict(zip(counts["ability"].to_pylist(), counts["ability_count"].to_pylist()))


def num_blocks(path: str | os.PathLike, bytes_per_block: int = 32 << 20) -> int:
    """Read parallelism for a Parquet file or folder: one block per ~32 MiB (Ray's default of 200 read
    tasks costs more than it saves on the small pools of tests and laptops)."""
    p = Path(path)
    size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*.parquet"))
    return max(1, min(256, -(-size // bytes_per_block)))


def local_dataset(path: str | os.PathLike, n_blocks: int | None = None):
    """A Ray Dataset of the Parquet file or folder ``path``, read here and handed over as Arrow blocks.

    Ray Data's read tasks may run on any node, and the path is on this node's disk: the blocks travel through
    the object store instead (the data of one study is small next to a node's memory).
    """
    import ray.data

    table = pq.read_table(str(path))
    n = max(1, min(n_blocks or num_blocks(path), table.num_rows or 1))
    step = -(-table.num_rows // n) if table.num_rows else 1
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, max(table.num_rows, 1), step)])


def mixture_key(pool: Pool, recipe: Recipe, seed: int) -> str:
    return hashlib.sha256(json.dumps([SAMPLING_VERSION, pool.key, recipe.key(), int(seed)]).encode()).hexdigest()[:16]


class _Select:
    """map_batches UDF: keep the rows some part draws from, tagged with that part and their order key."""

    def __init__(self, parts: list[tuple[str, str | None, list[str] | None, list[str]]], seed: int):
        self.parts, self.seed = parts, seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        from doitray.records import SCHEMA

        cols = {c: batch[c].to_pylist() for c in ("split", "construction", "source", "ability")}
        part, n_match = [], []
        for split, cons, ability, source in zip(cols["split"], cols["construction"], cols["ability"], cols["source"]):
            hits = [i for i, (ps, pc_, psrc, wanted) in enumerate(self.parts)
                    if split == ps and ability in wanted and (pc_ is None or cons == pc_)
                    and (psrc is None or source in psrc)]
            part.append(hits[0] if hits else -1)
            n_match.append(len(hits))
        keep = pa.array([p >= 0 for p in part])
        out = batch.select(SCHEMA.names).cast(SCHEMA).filter(keep)
        ids = out["id"].to_pylist()
        return (out.append_column("order_key", pa.array([order_key(self.seed, i) for i in ids], pa.string()))
                .append_column("part", pa.array([p for p in part if p >= 0], pa.int32()))
                .append_column("n_match", pa.array([m for m, p in zip(n_match, part) if p >= 0], pa.int32())))


def select_prefix(table: pa.Table, quotas: dict[str, int]) -> pa.Table:
    """Per ability the first n rows by (order_key, id), cycling with ``#r<k>`` ids when n exceeds the rows.

    The result depends only on the set of rows, never on their order in ``table``; for n <= m the
    selection at n is a prefix of the selection at m.
    """
    out = []
    for a, n in quotas.items():
        if n <= 0:
            continue
        sub = table.filter(pc.equal(table["ability"], a)).sort_by([("order_key", "ascending"), ("id", "ascending")])
        if sub.num_rows == 0:
            raise ValueError(f"no rows of ability {a!r} to sample from")
        k = min(n, sub.num_rows)
        out.append(sub.slice(0, k).append_column("upsampled", pa.array([False] * k)))
        copy = 1
        while k < n:
            extra = sub.slice(0, min(sub.num_rows, n - k))
            ids = pc.binary_join_element_wise(extra["id"], pa.scalar(f"#r{copy}"), "")
            extra = extra.set_column(extra.schema.get_field_index("id"), "id", ids)
            out.append(extra.append_column("upsampled", pa.array([True] * extra.num_rows)))
            k += extra.num_rows
            copy += 1
    return pa.concat_tables(out) if out else table.slice(0, 0).append_column("upsampled", pa.array([], pa.bool_()))


def sample_mixture(pool: Pool, recipe: Recipe, seed: int, cache_dir: str | os.PathLike,
                   *, override_num_blocks: int | None = None) -> Mixture:
    """The mixture of ``recipe`` drawn from ``pool`` with ``seed`` (cached under ``cache_dir/mixtures``).

    One Ray Data pass reads the pool, keeps the rows some part draws from and hashes their ids in
    parallel; the per-stratum prefixes are then cut on the driver from those candidate rows.
    """
    import ray
    import ray.data

    key = mixture_key(pool, recipe, seed)
    out = Path(cache_dir) / "mixtures" / key
    if (out / "mixture.json").exists():
        return Mixture.load(out)
    all_quotas = [p.quotas(available(pool, p)) for p in recipe.parts]
    spec = [(p.split, p.construction, list(p.sources) if p.sources is not None else None,
             [a for a, n in q.items() if n > 0]) for p, q in zip(recipe.parts, all_quotas)]
    ds = local_dataset(pool.path, override_num_blocks)
    ds = ds.map_batches(_Select(spec, int(seed)), batch_format="pyarrow", batch_size=None)
    blocks = [b for b in ray.get(ds.to_arrow_refs()) if b.num_rows]
    if not blocks:
        raise ValueError(f"recipe {recipe.name or recipe.key()} selects no rows from pool {pool.key}")
    cand = pa.concat_tables(blocks)
    if pc.max(cand["n_match"]).as_py() > 1:
        raise ValueError("recipe parts overlap: some rows are selected by two parts; make the parts disjoint "
                         "(e.g. by abilities, construction or sources)")
    cand = cand.drop_columns(["n_match"])
    tables = [select_prefix(cand.filter(pc.equal(cand["part"], i)), q) for i, q in enumerate(all_quotas)]
    table = pa.concat_tables(tables).sort_by(
        [("part", "ascending"), ("ability", "ascending"), ("order_key", "ascending"), ("id", "ascending")])
    part_counts = []
    for i, q in enumerate(all_quotas):
        sub = table.filter(pc.equal(table["part"], i))
        agg = sub.group_by("ability").aggregate([("ability", "count")])
        got = dict(zip(agg["ability"].to_pylist(), agg["ability_count"].to_pylist()))
        exp = {a: n for a, n in q.items() if n > 0}
        if got != exp:  # exact counts are a guarantee: checked, not assumed
            raise RuntimeError(f"sampling produced {got} for part {i}, expected {exp}")
        part_counts.append(dict(sorted(got.items())))
    counts: dict[str, int] = {}
    for c in part_counts:
        for a, n in c.items():
            counts[a] = counts.get(a, 0) + n
    tmp = out.with_name(f"{key}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    pq.write_table(table, tmp / "data" / "part-00000.parquet")
    mix = Mixture(path=str(out / "data"), key=key, counts=dict(sorted(counts.items())), n=table.num_rows,
                  seed=int(seed), pool_key=pool.key, recipe_key=recipe.key(), part_counts=part_counts,
                  n_upsampled=int(pc.sum(table["upsampled"].cast(pa.int64())).as_py() or 0))
    info = asdict(mix) | {"recipe": json.loads(recipe.model_dump_json())}
    (tmp / "mixture.json").write_text(json.dumps(info, indent=1))
    try:
        os.replace(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return Mixture.load(out)
