"""Weights & Biases runs (optional: ``pip install wandb``). Offline unless ``WANDB_MODE`` or an API key says
otherwise, so it needs no network; ``wandb sync <dir>`` uploads later.

A run's id is derived from its identity (study, cell), so a resumed study continues the same runs
(``resume="allow"``); cells are grouped under their study (``group``), the study run has ``job_type`` study.
W&B cannot share one run between two live processes, so Train workers do not log into it: the cell driver
logs each stage's train metrics when the stage ends (``live = False``).
"""
from __future__ import annotations

import hashlib
import os

from doitray.tracking.target import Target

STEP = "doitray/step"  # the x-axis of every metric (W&B's own step must only grow)


class WandbBackend:
    live = False

    def __init__(self, target: Target):
        import wandb  # noqa: F401  - fail here (one warning) when it is not installed

        self.target = target
        if target.uri:
            os.makedirs(target.uri, exist_ok=True)

    def open(self, identity: dict[str, str], *, name: str, parent: str | None) -> "WandbRun":
        import wandb

        key = "|".join(f"{k}={identity[k]}" for k in sorted(identity))
        run_id = hashlib.sha256(f"{self.target.experiment}|{key}".encode()).hexdigest()[:32]
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        run = wandb.init(project=self.target.experiment, id=run_id, resume="allow", name=name, mode=mode,
                         group=identity.get("doitray.study"), job_type=identity.get("doitray.kind"),
                         dir=self.target.uri, reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off"))
        run.define_metric(STEP)
        run.define_metric("*", step_metric=STEP)
        run.summary.update(identity)
        return WandbRun(run)

    def attach(self, run_id: str) -> None:
        raise RuntimeError("W&B runs are not logged into from Train workers")


class WandbRun:
    def __init__(self, run):
        self.run = run
        self.run_id = run.id

    def logged_steps(self, key: str) -> set[int]:
        return set()

    def log_params(self, params: dict[str, str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for k, v, step in rows:
            by_step.setdefault(step, {})[k] = v
        for step in sorted(by_step):
            self.run.log({**by_step[step], STEP: step})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.summary.update(tags)

    def log_artifact(self, local_path: str, name: str) -> None:
        import wandb

        art = wandb.Artifact(f"{name}-{self.run.id}", type=name)
        (art.add_dir if os.path.isdir(local_path) else art.add_file)(local_path)
        self.run.log_artifact(art)

    def end(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)

    def close(self) -> None:
        pass
