"""Tracked runs: one per study, one per cell nested under it, each found again by its identity on resume.

Every call on a ``Run`` is guarded: a tracker that is down (a server that does not answer, a bad URI, a
missing package) prints one warning and turns that run off; the study and its cells go on. Metrics are
logged once per (key, step): a step already in the run (a resumed Train run re-running steps after its
last checkpoint, a resumed cell re-reading its scores) is skipped where the backend can read its history.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import time
from typing import Any, Iterable

from doitray.tracking.target import Target, resolve_target
from doitray.tracking.warn import warn

_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]+")   # the characters MLflow allows in a metric, param or tag key
STUDY, CELL = "study", "cell"
_RUNS: dict[tuple, "Run"] = {}             # this process's open runs, by identity


def _backend_class(kind: str):
    if kind == "mlflow":
        from doitray.tracking.mlflow_backend import MlflowBackend

        return MlflowBackend
    if kind == "tensorboard":
        from doitray.tracking.tensorboard_backend import TensorboardBackend

        return TensorboardBackend
    if kind == "wandb":
        from doitray.tracking.wandb_backend import WandbBackend

        return WandbBackend
    raise ValueError(f"tracking kind {kind!r} has no backend")


def _backend(target: Target):
    return _backend_class(target.kind)(target)


def metric_key(key: str) -> str:
    """``key`` with the characters trackers reject replaced by ``_``."""
    return _KEY.sub("_", key)


class Run:
    """One tracked run (or nothing, when tracking is off or its tracker failed)."""

    def __init__(self, target: Target, opener=None, *, what: str = "run", live: bool = False, **meta: Any):
        self.target, self.what, self.live, self.meta = target, what, live, meta
        self.handle = None
        self._seen: dict[str, set[int]] = {}
        if opener is not None and target.kind != "none":
            self.handle = self._guard("start", opener)

    @property
    def active(self) -> bool:
        return self.handle is not None

    @property
    def run_id(self) -> str | None:
        return self.handle.run_id if self.handle is not None else None

    def _guard(self, op: str, fn, *args):
        for attempt in (0, 1):
            try:
                return fn(*args)
            except Exception as e:  # noqa: BLE001 - a tracker failure must never fail the work it watches
                if attempt == 0 and op != "start":
                    time.sleep(0.5)    # e.g. a SQLite store briefly locked by another process
                    continue
                why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                warn(f"tracking ({self.target.kind} {self.target.uri or ''}) {self.what}: {op} failed, "
                     f"not tracking it any more: {why}")
                if self.handle is not None:
                    try:
                        self.handle.close()
                    except Exception:  # noqa: BLE001
                        pass
                self.handle = None
                return None

    def log_params(self, params: dict[str, Any]) -> None:
        """``params`` as strings (None, an unset level, is left out); one already logged keeps its value."""
        if self.active:
            self._guard("log params", self.handle.log_params,
                        {metric_key(k): str(v)[:6000] for k, v in params.items() if v is not None})

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Numeric ``metrics`` at ``step`` (None, NaN and non-numbers are left out)."""
        self.log_rows((k, v, step) for k, v in metrics.items())

    def log_rows(self, rows: Iterable[tuple[str, Any, int]]) -> None:
        """(key, value, step) rows, each (key, step) at most once per run."""
        if not self.active:
            return
        out = []
        for k, v, step in rows:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            k = metric_key(k)
            if k not in self._seen:
                self._seen[k] = self._guard("read history", self.handle.logged_steps, k) or set()
                if not self.active:
                    return
            if int(step) in self._seen[k]:
                continue
            self._seen[k].add(int(step))
            out.append((k, float(v), int(step)))
        if out:
            self._guard("log metrics", self.handle.log_metrics, out)

    def log_report(self, report: dict[str, Any]) -> None:
        """A Train report (its ``history`` of earlier steps and its own step): the keys the cell asked for."""
        if not self.active:
            return
        keys, prefix = self.meta.get("keys") or (), self.meta.get("prefix") or ""
        self.log_rows((f"{prefix}{k}", entry.get(k), int(entry["step"]))
                      for entry in [*report.get("history", ()), report] if "step" in entry for k in keys)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            self._guard("set tags", self.handle.set_tags, {metric_key(k): str(v) for k, v in tags.items()})

    def log_artifact(self, path: str, name: str) -> None:
        """A local file or folder (or a file on object storage, fetched first) as artifact ``name``."""
        if self.active:
            self._guard("log artifact", _log_artifact, self.handle, path, name)

    def worker_ref(self, *, prefix: str = "", keys: Iterable[str] = ()) -> dict | None:
        """What a Train worker needs to log into this run (None: off, or the backend logs from the driver)."""
        if not (self.active and self.live):
            return None
        return {"target": self.target.as_dict(), "run_id": self.run_id, "prefix": prefix, "keys": list(keys)}

    def child_ref(self) -> dict | None:
        """What a cell needs to open its run nested under this (study) run; None when it is off."""
        if not self.active:
            return None
        return {"target": self.target.as_dict(), "study": self.meta.get("study"), "parent": self.run_id}

    def end(self, status: str = "FINISHED", tags: dict[str, Any] | None = None) -> None:
        """Mark the run ended (``FINISHED`` / ``FAILED``), with ``tags`` set first; this process forgets it."""
        for key in [k for k, r in _RUNS.items() if r is self]:
            del _RUNS[key]
        if tags:
            self.set_tags(tags)
        if self.active:
            self._guard("end", self.handle.end, status)
            self.handle = None

    def close(self) -> None:
        """Flush and let go (the run stays open for its other writers)."""
        if self.active:
            self._guard("close", self.handle.close)


def _log_artifact(handle, path: str, name: str) -> None:
    if "://" not in path:
        return handle.log_artifact(path, name)
    import pyarrow.fs as pafs

    fs, p = pafs.FileSystem.from_uri(path)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(p))
        with fs.open_input_stream(p) as src, open(local, "wb") as dst:
            dst.write(src.read())
        handle.log_artifact(local, name)


def study_run(target: Target, study: str, params: dict[str, Any] | None = None) -> Run:
    """The study's run: started, or resumed when it exists (tags ``doitray.study`` / ``doitray.kind``)."""
    key = (STUDY, target, study)
    if key not in _RUNS:
        ident = {"doitray.study": study, "doitray.kind": STUDY}
        run = Run(target, lambda: _backend(target).open(ident, name=study, parent=None), what=f"study {study}",
                  study=study)
        if params:
            run.log_params(params)
        _RUNS[key] = run
    return _RUNS[key]


def open_study(tracking: dict[str, Any], *, storage: str, study: str, params: dict[str, Any] | None = None) -> Run:
    """``study_run`` for a study file's ``tracking`` block (``kind``, ``uri``, ``experiment``) and storage."""
    target = resolve_target(tracking.get("kind") or "mlflow", tracking.get("uri"), tracking.get("experiment"),
                            storage, study)
    return study_run(target, study, params)


def cell_run(ref: dict | None, cell_id: str, name: str | None = None) -> Run:
    """A cell's run nested under its study's (``ref`` from ``Run.child_ref``), started or resumed by its
    ``doitray.cell_id`` tag; a no-op run when ``ref`` is None (tracking off, or the study's tracker down)."""
    target = Target.from_dict(ref["target"]) if ref else Target(kind="none")
    key = (CELL, target, cell_id)
    if key not in _RUNS:
        opener = None
        if ref:
            ident = {"doitray.study": ref["study"], "doitray.kind": CELL, "doitray.cell_id": cell_id}
            opener = lambda: _backend(target).open(ident, name=name or cell_id, parent=ref["parent"])  # noqa: E731
        live = bool(ref) and _backend_class(target.kind).live
        _RUNS[key] = Run(target, opener, what=f"cell {cell_id}", live=live, study=ref and ref["study"])
    return _RUNS[key]


def worker_run(ref: dict | None) -> Run:
    """A Train worker's handle on its cell's run (``ref`` from ``Run.worker_ref``; None: nothing logged)."""
    if not ref:
        return Run(Target(kind="none"))
    target = Target.from_dict(ref["target"])
    return Run(target, lambda: _backend(target).attach(ref["run_id"]), what=f"run {ref['run_id']}",
               keys=ref.get("keys"), prefix=ref.get("prefix"))

