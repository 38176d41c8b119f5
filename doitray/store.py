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

import errno
import json
import os
import re
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from doitray.console import CommandError

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
        ("error", pa.string()), ("sandbox", pa.string()),  # code items: the isolation they ran under
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


class StorageError(CommandError, OSError):
    """The study's storage cannot be used (unreachable, unauthorised, missing, not writable).

    One line naming the storage and the fix; still an ``OSError`` for code that handles I/O failures.
    """


# S3 / GCS bucket names: lowercase letters, digits, dots, hyphens (GCS: underscores), at least 3 characters
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_OBJECT_STORES = ("s3", "gs", "gcs")


def _detail(msg: str) -> str:
    """The useful part of a pyarrow / AWS SDK message (e.g. "Could not connect to server")."""
    m = re.search(r"curlCode: \d+, ([^;]+)", msg) or re.search(r"\[errno \d+\] ([^\n;]+)", msg)
    if m:
        return m.group(1).strip()
    m = re.search(r"AWS Error ([A-Z_]+)[^:]*:\s*([^;]*)", msg)
    if m:
        return (m.group(2).strip() or m.group(1)).rstrip(".")[:120]
    return " ".join(msg.split())[-120:]


def storage_error(root: str, err: BaseException) -> StorageError:
    """``err`` (from pyarrow or the OS) as one line: what is wrong with ``root`` and what to do."""
    msg = str(err)
    low = msg.lower()
    scheme = root.split("://", 1)[0].lower() if "://" in root else ""
    local = not scheme or scheme == "file"
    if "unrecognized filesystem type" in low:
        return StorageError(f"storage {root}: unknown scheme {scheme}:// — use a local folder, s3://BUCKET/PREFIX "
                            "or gs://BUCKET/PREFIX")
    if any(k in low for k in ("no_such_bucket", "nosuchbucket", "bucket does not exist")) or (
            "bucket" in low and ("not found" in low or "does not exist" in low)):
        return StorageError(f"storage {root}: the bucket does not exist — create it, or give an existing bucket "
                            "(--storage s3://BUCKET/PREFIX) or a local folder")
    if any(k in low for k in ("access_denied", "accessdenied", "access denied", "forbidden", "invalidaccesskeyid",
                              "signaturedoesnotmatch", "expiredtoken", "credential", "unauthorized",
                              "http status code 403", "http status code 401")) and not local:
        creds = ("GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`" if scheme in ("gs", "gcs")
                 else "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role")
        return StorageError(f"storage {root}: access denied ({_detail(msg)}) — set credentials that can read and "
                            f"write it ({creds})")
    if not local:
        return StorageError(f"storage {root} is unreachable ({_detail(msg)}) — check the bucket name, the network "
                            "and AWS_ENDPOINT_URL / AWS_REGION if set, or use a local folder (e.g. runs/NAME)")
    code = getattr(err, "errno", None)
    if isinstance(err, PermissionError) or code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR) or any(
            k in low for k in ("permission denied", "read-only file system", "not a directory")):
        return StorageError(f"storage {root} is not writable ({_detail(msg)}) — give a folder you can write "
                            "(e.g. runs/NAME)")
    return StorageError(f"storage {root}: {_detail(msg)} — check the path, or give another folder (e.g. runs/NAME)")


def _open_filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a storage URI; a placeholder or malformed bucket fails here, offline."""
    scheme, _, rest = root.partition("://")
    if scheme.lower() in _OBJECT_STORES:
        bucket = rest.split("/", 1)[0].split("?", 1)[0]
        if not _BUCKET.match(bucket):
            what = ("the example placeholder, not a bucket" if bucket.upper() in ("YOUR-BUCKET", "YOUR_BUCKET", "BUCKET")
                    else "not a valid bucket name (lowercase letters, digits, dots and hyphens, 3 or more)")
            hint = f"{scheme}://<your-bucket>/{rest.split('/', 1)[1]}" if "/" in rest else f"{scheme}://<your-bucket>"
            raise StorageError(f"storage {root}: {bucket!r} is {what} — give {hint} (your own bucket, e.g. "
                               "with --storage) or a local folder")
    try:
        return pafs.FileSystem.from_uri(root)
    except (OSError, pa.ArrowException) as e:
        raise storage_error(root, e) from e


class ResultsStore:
    """Read and write the study tables under ``root`` (a local path or a pyarrow-filesystem URI)."""

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None):
        if filesystem is None:
            if "://" in root:
                filesystem, path = _open_filesystem(root)
            else:
                filesystem, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root))
        else:
            path = root
        self.fs = filesystem
        self.root = path.rstrip("/")
        self.uri = root if "://" in root else self.root
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Storage failures (network, credentials, permissions) as one ``StorageError``; a missing file stays
        ``FileNotFoundError``."""
        try:
            yield
        except (StorageError, FileNotFoundError):
            raise
        except OSError as e:
            raise storage_error(self.uri, e) from e

    def check_writable(self) -> None:
        """Create the root, so an unreachable, unauthorised or read-only storage fails before any work."""
        with self._errors():
            if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:  # one request when unreachable
                self.fs.create_dir(self.root, recursive=True)
            if self._local and not os.access(self.root, os.W_OK):
                raise PermissionError(errno.EACCES, "Permission denied", self.root)

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
        with self._errors():
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
        with self._errors():
            infos = self.fs.get_file_info(sel)
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))

    def has_part(self, table: str, key: str) -> bool:
        with self._errors():
            info = self.fs.get_file_info(f"{self.table_dir(table)}/{part_key(key)}.parquet")
        return info.type == pafs.FileType.File

    def read_arrow(self, table: str) -> pa.Table:
        schema = SCHEMAS[table]
        pieces = []
        for p in self.parts(table):
            t = self._read_part(p)
            for name in schema.names:     # a part written before a column existed reads it as null
                if name not in t.column_names:
                    t = t.append_column(name, pa.nulls(len(t), schema.field(name).type))
            pieces.append(t.select(schema.names).cast(schema))
        return pa.concat_tables(pieces) if pieces else schema.empty_table()

    def _read_part(self, path: str) -> pa.Table:
        """One part. On object storage another writer may replace it meanwhile, and pyarrow's read takes the size
        (HEAD) before the bytes (a ranged GET): a longer new version then arrives cut off. Such a read is retried."""
        with self._errors():
            if self._local:
                return pq.read_table(path, filesystem=self.fs)
            return self._get(path, lambda b: pq.read_table(pa.BufferReader(b)))

    def _get(self, path: str, parse):
        for attempt in range(6):
            with self.fs.open_input_stream(path) as f:
                data = f.read()
            try:
                return parse(data)
            except (pa.ArrowInvalid, ValueError):
                if attempt == 5:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def read(self, table: str) -> pd.DataFrame:
        """The whole table as a DataFrame (empty, with its columns, when nothing was written yet)."""
        return self.read_arrow(table).to_pandas()

    def read_json(self, name: str) -> Any | None:
        p = self.path(name)
        with self._errors():
            if self.fs.get_file_info(p).type != pafs.FileType.File:
                return None
            if self._local:
                with self.fs.open_input_stream(p) as f:
                    return json.loads(f.read().decode("utf-8"))
            return self._get(p, lambda b: json.loads(b.decode("utf-8")))

    def exists(self) -> bool:
        with self._errors():
            return self.fs.get_file_info(self.path("study.json")).type == pafs.FileType.File
