"""The results store: long Parquet tables under a study's storage path (local, ``s3://``, ``gs://``).

Layout::

    <root>/study.json                  the validated study spec as run
    <root>/tables/<table>/<key>.parquet one part per writer key (e.g. one cell, one checkpoint × suite)

A table is the union of its parts: ``pandas.read_parquet("<root>/tables/scores")`` reads it without
doitray. Writing a part replaces the part with the same key, so re-running a step is idempotent.
Local writes go to a temporary file and are renamed into place; object-store writes are single PUTs.
Either way a crash leaves the old part or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

CELL_STATES = ("pending", "running", "done", "failed")

SCHEMAS: dict[str, pa.Schema] = {
    "cells": pa.schema([
        ("cell_id", pa.string()), ("study", pa.string()), ("state", pa.string()), ("attempts", pa.int64()),
        ("error", pa.string()), ("tier", pa.string()), ("model", pa.string()), ("model_params", pa.int64()),
        ("construction", pa.string()), ("volume", pa.int64()), ("per_ability", pa.float64()),
        ("composition", pa.string()), ("strategy", pa.string()), ("replay_frac", pa.float64()),
        ("seed", pa.int64()), ("train_tokens", pa.int64()), ("recipe", pa.string()), ("factors", pa.string()),
        ("started_at", pa.float64()), ("finished_at", pa.float64()), ("updated_at", pa.float64()),
        ("data_s", pa.float64()), ("train_s", pa.float64()), ("eval_s", pa.float64()),
    ]),
    "checkpoints": pa.schema([
        ("cell_id", pa.string()), ("checkpoint", pa.string()), ("stage", pa.int64()), ("stage_name", pa.string()),
        ("step", pa.int64()), ("epoch", pa.float64()), ("path", pa.string()), ("hf_path", pa.string()),
        ("valid_loss", pa.float64()), ("selected", pa.bool_()), ("created_at", pa.float64()),
    ]),
    "train_metrics": pa.schema([
        ("cell_id", pa.string()), ("stage", pa.int64()), ("step", pa.int64()), ("epoch", pa.float64()),
        ("metric", pa.string()), ("value", pa.float64()),
    ]),
    "predictions": pa.schema([
        ("cell_id", pa.string()), ("checkpoint", pa.string()), ("suite", pa.string()), ("split", pa.string()),
        ("item_id", pa.string()), ("ability", pa.string()), ("metric", pa.string()), ("prediction", pa.string()),
        ("parsed", pa.string()), ("gold", pa.string()), ("score", pa.float64()), ("chance", pa.float64()),
        ("error", pa.string()),
    ]),
    "scores": pa.schema([
        ("cell_id", pa.string()), ("checkpoint", pa.string()), ("stage", pa.int64()), ("step", pa.int64()),
        ("epoch", pa.float64()), ("suite", pa.string()), ("split", pa.string()), ("ability", pa.string()),
        ("metric", pa.string()), ("value", pa.float64()), ("n", pa.int64()), ("chance", pa.float64()),
        ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ]),
}
TABLES = tuple(SCHEMAS)

_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def _null_nan(v: Any) -> Any:
    """Missing values read back through pandas come as NaN; store them as null."""
    return None if isinstance(v, float) and v != v else v


def part_key(*parts: Any) -> str:
    """A file-name-safe part key from its components."""
    return "__".join(_SAFE.sub("_", str(p)) for p in parts)


class ResultsStore:
    """Read and write the study tables under ``root`` (a local path or a pyarrow-filesystem URI)."""

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None):
        if filesystem is None:
            if "://" in root:
                filesystem, path = pafs.FileSystem.from_uri(root)
            else:
                filesystem, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root))
        else:
            path = root
        self.fs = filesystem
        self.root = path.rstrip("/")
        self.uri = root if "://" in root else self.root
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    # -- paths --------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def table_dir(self, table: str) -> str:
        if table not in SCHEMAS:
            raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        return self.path("tables", table)

    # -- writes -------------------------------------------------------------------------------
    def _put(self, path: str, write) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if self._local:
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            try:
                write(tmp)
                self.fs.move(tmp, path)  # rename: atomic on POSIX
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            write(path)  # an object PUT is atomic

    def write(self, table: str, key: str, rows: list[dict]) -> str:
        """Replace part ``key`` of ``table`` with ``rows`` (missing columns are null)."""
        schema = SCHEMAS[table]
        data = pa.Table.from_pylist([{f: _null_nan(r.get(f)) for f in schema.names} for r in rows], schema=schema)
        path = f"{self.table_dir(table)}/{part_key(key)}.parquet"

        def _w(p: str) -> None:
            with self.fs.open_output_stream(p) as f:
                pq.write_table(data, f)

        self._put(path, _w)
        return path

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``<root>/<name>`` as JSON, atomically."""
        payload = json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode("utf-8")

        def _w(p: str) -> None:
            with self.fs.open_output_stream(p) as f:
                f.write(payload)

        self._put(self.path(name), _w)

    # -- reads --------------------------------------------------------------------------------
    def parts(self, table: str) -> list[str]:
        sel = pafs.FileSelector(self.table_dir(table), allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and i.path.endswith(".parquet"))

    def has_part(self, table: str, key: str) -> bool:
        info = self.fs.get_file_info(f"{self.table_dir(table)}/{part_key(key)}.parquet")
        return info.type == pafs.FileType.File

    def read_arrow(self, table: str) -> pa.Table:
        schema = SCHEMAS[table]
        pieces = []
        for p in self.parts(table):
            with self.fs.open_input_file(p) as f:
                t = pq.read_table(f)
            for name in schema.names:     # a part written before a column existed reads it as null
                if name not in t.column_names:
                    t = t.append_column(name, pa.nulls(len(t), schema.field(name).type))
            pieces.append(t.select(schema.names).cast(schema))
        return pa.concat_tables(pieces) if pieces else schema.empty_table()

    def read(self, table: str) -> pd.DataFrame:
        """The whole table as a DataFrame (empty, with its columns, when nothing was written yet)."""
        return self.read_arrow(table).to_pandas()

    def read_json(self, name: str) -> Any | None:
        p = self.path(name)
        if self.fs.get_file_info(p).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(p) as f:
            return json.loads(f.read().decode("utf-8"))

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path("study.json")).type == pafs.FileType.File
