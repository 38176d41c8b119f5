"""TensorBoard event files: the study run is ``<root>/<experiment>``, a cell's run ``<root>/<experiment>/<cell_id>``.

The folder is the run's identity, so a resumed study appends new event files to the same runs. Params and
tags are text summaries (``params``, ``tags/<key>``); an artifact is copied into ``<run>/artifacts/<name>``.
"""
from __future__ import annotations

import os
import shutil

from doitray.tracking.target import Target


class TensorboardBackend:
    live = True  # each process writes its own event file into the run's folder

    def __init__(self, target: Target):
        self.root = os.path.abspath(os.path.expanduser(target.uri))
        self.experiment = target.experiment

    def open(self, identity: dict[str, str], *, name: str, parent: str | None) -> "TensorboardRun":
        cell = identity.get("doitray.cell_id")
        run = self.attach(f"{self.experiment}/{cell}" if cell else self.experiment)
        run.set_tags({**identity, "name": name})
        return run

    def attach(self, run_id: str) -> "TensorboardRun":
        return TensorboardRun(self.root, run_id)


class TensorboardRun:
    def __init__(self, root: str, run_id: str):
        self.run_id = run_id
        self.dir = os.path.join(root, run_id)
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.dir, flush_secs=10)
        return self._writer

    def logged_steps(self, key: str) -> set[int]:
        return set()

    def log_params(self, params: dict[str, str]) -> None:
        table = "\n".join(["| param | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in params.items())])
        self.writer.add_text("params", table)
        self.writer.flush()

    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None:
        for k, v, step in rows:
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.writer.add_text(f"tags/{k}", v)
        self.writer.flush()

    def log_artifact(self, local_path: str, name: str) -> None:
        dest = os.path.join(self.dir, "artifacts", name)
        if os.path.isdir(local_path):
            shutil.copytree(local_path, dest, dirs_exist_ok=True)
        else:
            os.makedirs(dest, exist_ok=True)
            shutil.copy2(local_path, dest)

    def end(self, status: str) -> None:
        self.set_tags({"doitray.status": status})
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
