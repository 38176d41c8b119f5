"""Where a study's runs are tracked: the study file's ``tracking`` block resolved against its storage."""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from typing import Any

from doitray.tracking.warn import warn

KINDS = ("mlflow", "wandb", "tensorboard", "none")
MLFLOW_DB = "mlflow.db"            # under a local storage: MLflow's SQLite store (its file store is retired)
MLFLOW_ARTIFACTS = "mlflow-artifacts"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


@dataclass(frozen=True)
class Target:
    """A resolved tracking destination (plain values, so it travels to Tune trials and Train workers)."""

    kind: str                       # mlflow | wandb | tensorboard | none
    uri: str | None = None          # mlflow tracking URI | tensorboard log root | wandb dir
    experiment: str = "doitray"     # MLflow experiment | W&B project | TensorBoard subfolder
    artifacts: str | None = None    # MLflow artifact root of a new experiment (local stores only)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Target":
        return cls(**d) if d else cls(kind="none")


@functools.lru_cache(maxsize=None)  # one warning per process
def resolve_target(kind: str, uri: str | None, experiment: str | None, storage: str, study: str) -> Target:
    """The destination for ``kind`` (``uri`` given, else a store under a local ``storage``).

    With object storage and no ``uri`` there is nowhere every process can write without a server:
    MLflow and TensorBoard are then off (a warning says how to turn them on); W&B keeps its own dir.
    """
    if kind not in KINDS:
        raise ValueError(f"tracking.kind {kind!r}: allowed {', '.join(KINDS)}")
    name = experiment or study
    if kind == "none":
        return Target(kind="none", experiment=name)
    local = None if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    if kind == "mlflow":
        if uri:
            return Target(kind="mlflow", uri=uri, experiment=name)
        if local is None:
            warn(f"tracking: storage {storage} is object storage and tracking.uri is not set, so runs are not "
                 "tracked; set tracking.uri to an MLflow server (http://HOST:5000) or a database URI")
            return Target(kind="none", experiment=name)
        return Target(kind="mlflow", uri=f"sqlite:///{os.path.join(local, MLFLOW_DB)}", experiment=name,
                      artifacts=os.path.join(local, MLFLOW_ARTIFACTS))
    if kind == "tensorboard":
        root = uri or (os.path.join(local, TENSORBOARD_DIR) if local else None)
        if root is None:
            warn(f"tracking: storage {storage} is object storage and tracking.uri is not set, so TensorBoard "
                 "events are not written; set tracking.uri to a shared directory")
            return Target(kind="none", experiment=name)
        return Target(kind="tensorboard", uri=root, experiment=name)
    return Target(kind="wandb", uri=uri or (os.path.join(local, WANDB_DIR) if local else None), experiment=name)
