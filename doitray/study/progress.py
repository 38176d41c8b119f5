"""Progress of a study: cells done / running / pending / failed with an ETA.

``study_status`` computes it from the store alone (``doitray study status DIR``); ``ProgressCallback``
prints the same line live during a run, at most every few seconds and on each state change, instead of
Tune's per-trial table.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import pandas as pd

from doitray.store import ResultsStore


@dataclass
class StudyStatus:
    study: str
    total: int
    done: int
    running: int
    pending: int
    failed: int
    elapsed_s: float
    eta_s: float | None
    mean_cell_s: float | None
    cells: list[dict]

    def line(self) -> str:
        eta = "?" if self.eta_s is None else _dur(self.eta_s)
        return (f"[{self.study}] done {self.done}/{self.total} · running {self.running} · pending {self.pending}"
                f" · failed {self.failed} · elapsed {_dur(self.elapsed_s)} · ETA {eta}")

    def to_dict(self) -> dict:
        return asdict(self)


def _dur(s: float) -> str:
    s = int(max(0, s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def status_from_cells(cells: pd.DataFrame, study: str, concurrency: int = 1, now: float | None = None) -> StudyStatus:
    """Counts and ETA from a ``cells`` table (one row per cell, latest state)."""
    now = time.time() if now is None else now
    counts = cells["state"].value_counts().to_dict() if len(cells) else {}
    done = cells[cells["state"] == "done"] if len(cells) else cells
    durations = (done["finished_at"] - done["started_at"]).dropna() if len(done) else pd.Series(dtype=float)
    mean = float(durations.mean()) if len(durations) else None
    started = cells["started_at"].dropna() if len(cells) else pd.Series(dtype=float)
    elapsed = now - float(started.min()) if len(started) else 0.0
    eta = None
    if mean is not None:  # a running cell needs what is left of a mean cell; a pending one a whole cell
        running = cells.loc[cells["state"] == "running", "started_at"].fillna(now)  # mean implies rows
        left = [max(0.0, mean - (now - float(t))) for t in running]
        queued = sum(left) + counts.get("pending", 0) * mean
        whole = mean if counts.get("pending", 0) else 0.0  # a pending cell takes a whole cell, however many slots
        eta = max(max(left, default=0.0), whole, queued / max(1, concurrency))
    rows = cells[["cell_id", "state", "attempts", "model", "construction", "composition", "volume", "strategy",
                  "replay_frac", "seed", "error"]].to_dict("records") if len(cells) else []
    return StudyStatus(study, len(cells), counts.get("done", 0), counts.get("running", 0),
                       counts.get("pending", 0), counts.get("failed", 0), elapsed, eta, mean, rows)


def study_status(root: str, concurrency: int | None = None) -> StudyStatus:
    """The status of the study stored under ``root``."""
    store = ResultsStore(root)
    spec = store.read_json("study.json") or {}
    if concurrency is None:
        concurrency = (store.read_json("run.json") or {}).get("concurrency", 1)
    return status_from_cells(store.read("cells"), spec.get("name", root), concurrency or 1)


try:  # Tune is an optional import for status-only use
    from ray.tune import Callback as _TuneCallback
except Exception:  # pragma: no cover
    _TuneCallback = object  # type: ignore[assignment,misc]


class ProgressCallback(_TuneCallback):  # type: ignore[misc,valid-type]
    """Prints the study status line on state changes and at most every ``interval`` seconds."""

    def __init__(self, root: str, concurrency: int, interval: float = 15.0, stream=None):
        self.root, self.concurrency, self.interval = root, concurrency, interval
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._last_line = ""

    def _print(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.interval:
            return
        try:
            line = study_status(self.root, self.concurrency).line()
        except Exception as e:  # the store may be mid-write on an object store; try again later
            line = f"(status unavailable: {e})"
        if force or line != self._last_line:
            print(line, file=self.stream, flush=True)
            self._last_line = line
        self._last = now

    def on_step_begin(self, iteration, trials, **info):
        self._print()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._print(force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._print(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(force=True)

    def on_experiment_end(self, trials, **info):
        self._print(force=True)
