"""MLflow runs through ``MlflowClient`` (no fluent active-run state: many runs per process, any process).

A run is found again by its identity tags (``doitray.study``, ``doitray.kind``, ``doitray.cell_id``), so a
resumed study logs into the runs it started, on a local SQLite store or a tracking server alike.
"""
from __future__ import annotations

import os
import time

from doitray.tracking.target import Target

# An unreachable server costs seconds, not MLflow's default minutes of retries (unless the user set these).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
BATCH = 1000  # MLflow's log_batch limit on metrics per call


def _ms() -> int:
    return int(time.time() * 1000)


class MlflowBackend:
    live = True  # a Train worker may log into a run that the cell driver holds open

    def __init__(self, target: Target):
        for k, v in _HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        from mlflow.tracking import MlflowClient

        self.target = target
        self.client = MlflowClient(target.uri)
        self._exp: str | None = None

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        if self._exp is None:
            name = self.target.experiment
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    self._exp = self.client.create_experiment(name, artifact_location=self.target.artifacts)
                except MlflowException:  # created by another process meanwhile
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None:
                        raise
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._exp = exp.experiment_id
        return self._exp

    def open(self, identity: dict[str, str], *, name: str, parent: str | None) -> "MlflowRun":
        exp = self._experiment_id()
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in identity.items())
        found = self.client.search_runs([exp], where, max_results=1, order_by=["attributes.start_time ASC"])
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return MlflowRun(self.client, run_id, fresh=False)
        tags = {**identity, **({"mlflow.parentRunId": parent} if parent else {})}
        run = self.client.create_run(exp, tags=tags, run_name=name)
        return MlflowRun(self.client, run.info.run_id, fresh=True)

    def attach(self, run_id: str) -> "MlflowRun":
        return MlflowRun(self.client, run_id, fresh=False)


class MlflowRun:
    def __init__(self, client, run_id: str, *, fresh: bool):
        self.client, self.run_id, self.fresh = client, run_id, fresh

    def logged_steps(self, key: str) -> set[int]:
        if self.fresh:
            return set()
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        have = {} if self.fresh else self.client.get_run(self.run_id).data.params
        # a param is immutable in MLflow: one already logged is kept (a resumed run has the same ones)
        new = [Param(k, v) for k, v in params.items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        ts = _ms()
        ms = [Metric(k, v, ts, step) for k, v, step in rows]
        for i in range(0, len(ms), BATCH):
            self.client.log_batch(self.run_id, metrics=ms[i:i + BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, local_path: str, name: str) -> None:
        if os.path.isdir(local_path):
            self.client.log_artifacts(self.run_id, local_path, artifact_path=name)
        else:
            self.client.log_artifact(self.run_id, local_path, artifact_path=name)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)

    def close(self) -> None:
        pass

