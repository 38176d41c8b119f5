"""Experiment tracking: one run per study, one run per cell nested under it, in MLflow (default), W&B,
TensorBoard, or none.

The study driver opens the study run (``study_run``), each cell's Tune trial its cell run (``cell_run``)
and the Train rank-0 worker logs its metrics by step into that run (``worker_run``): numbers are logged by
the process that has them, never read back from the results store. Runs are found again by identity, so a
resumed study continues them; a tracker that is down is a warning, never a failed cell. This package
imports nothing else of doitray (study and train both use it).
"""
from doitray.tracking.runs import Run, cell_run, metric_key, open_study, study_run, worker_run
from doitray.tracking.target import KINDS, Target, resolve_target

__all__ = ["KINDS", "Run", "Target", "cell_run", "metric_key", "open_study", "resolve_target", "study_run", "worker_run"]
