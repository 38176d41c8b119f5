"""A stage = one Ray Train run (TorchTrainer, FSDP2) with its own recipe, named by its content.

``run_stage(spec)`` resolves the model, builds the ``TorchTrainer`` (Train V2) and runs it under the
active Ray. The run directory ``<storage_path>/<run_name>`` holds Ray's checkpoint snapshot (re-running
the same spec resumes from the latest checkpoint, on any worker count), the DCP checkpoints, the HF
exports (``exports/<checkpoint>/hf``) and, once done, ``stage_complete.json``: a completed stage is
returned from that record without training again (DMT cells with different k share stage 1).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from doitray.train.settings import CheckpointPolicy, TrainSettings
from doitray.train.storage import exists, join, list_dirs, read_json, write_json

# the key prefix of a ModelSource pretrained by a study (``study.pretrain``): part of the stage key of the stages that
# start from it (a preset's stage keys without one stay as they were)
PRETRAINED_BASE = "pretrain-"
COMPLETE = "stage_complete.json"  # written in the run directory once its final export exists
# how often a Train controller polls its workers (Ray's default 2 s): a run's every report and its end wait for a
# poll, ~6 s of a tiny stage's ~18 s; a poll is one small actor call per worker. An interval set by the user wins.
POLL_INTERVAL_S = "0.25"
METRICS = ("train_loss", "valid_loss", "lr", "grad_norm", "tokens_per_s", "step_time_s", "data_wait_s",
           "peak_memory_bytes", "mfu")


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str = Field(description="preset name | HF directory | .gguf file | s3:// or gs:// URI")
    model_path: str | None = Field(None, description="weights of a backbone preset (local dir or URI)")
    tokenizer_dir: str | None = None
    template: str = "doit"
    train_data: str = Field(description="packed Parquet directory (the data layer's contract)")
    valid_data: str | None = None
    data_keys: list[str] | None = Field(None, description="content keys of the data; default: from packed.json")
    settings: TrainSettings = Field(default_factory=lambda: TrainSettings.preset("tiny"))
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    init_from: str | None = Field(None, description="HF directory of the previous stage's final weights")
    storage_path: str
    run_name: str | None = Field(None, description="default: '<name>-<stage_key>' (deterministic → resumable)")
    num_workers: int | tuple[int, int] = 2
    resources_per_worker: dict[str, float] | None = None
    use_gpu: bool = False
    max_failures: int = 0
    # the workers' placement group (not part of the stage's identity): STRICT_PACK keeps a GPU group on one node
    placement_strategy: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"
    cache_dir: str | None = Field(None, description="node-local cache for prepared models (default ~/.cache/doitray)")
    source: dict | None = Field(None, description="the model already resolved (a ModelSource dict whose folders may "
                                "be storage URIs: each worker fetches them); default: resolve model/init_from here")
    tracking: dict | None = Field(None, description="the cell's tracked run, for rank 0's metrics by step "
                                  "(doitray.tracking.Run.worker_ref; not part of the stage's identity)")
    # test hooks (not part of the stage's identity)
    fail_at_step: int | None = None
    fail_marker: str | None = None
    stop_after_steps: int | None = None


class CheckpointInfo(BaseModel):
    name: str
    step: int
    epoch: int
    path: str
    hf_path: str | None = None
    valid_loss: float | None = None
    train_loss: float | None = None
    final: bool = False


class StageResult(BaseModel):
    name: str
    key: str
    run_name: str
    run_path: str
    checkpoints: list[CheckpointInfo]
    metrics: list[dict[str, Any]]          # {step, epoch, metric, value}
    final_hf_path: str | None
    shard_stats: list[dict[str, Any]] = []
    resumed_from: list[int] = []          # the step each (re)start of the worker group began at
    reused: bool = False
    train_seconds: float = 0.0


def _data_key(path: str | None) -> str | None:
    """The packed data's content key (``packed.json`` beside its ``data`` folder, without where it lies: the
    same data packed on another node's scratch gives the same key); the path itself when there is none."""
    if path is None:
        return None
    for meta in (join(path, "packed.json"), join(os.path.dirname(path.rstrip("/")), "packed.json")):
        try:
            info = read_json(meta) if exists(meta) else None
        except Exception:  # noqa: BLE001 - an unreadable sidecar just falls back to the path
            info = None
        if info:
            body = json.dumps({k: v for k, v in info.items() if k not in ("path", "tokenizer")}, sort_keys=True)
            return hashlib.sha256(body.encode()).hexdigest()[:16]
    return hashlib.sha256(path.encode()).hexdigest()[:16]


def stage_key(spec: StageSpec) -> str:
    """Content hash of what determines a stage's weights: model (+ init_from), data, template, settings, policy."""
    data = spec.data_keys or [_data_key(spec.train_data), _data_key(spec.valid_data)]
    parts = {"model": spec.model, "model_path": spec.model_path, "tokenizer": spec.tokenizer_dir,
             "template": spec.template, "init_from": spec.init_from, "data": data,
             "settings": spec.settings.model_dump(exclude={"log_every"}), "policy": spec.checkpoint.model_dump()}
    base = (spec.source or {}).get("key") or ""
    if base.startswith(PRETRAINED_BASE):  # a base pretrained by the study: other weights than the preset's own
        parts["base"] = base
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_uri(spec: StageSpec) -> str:
    """Where a stage's Train run lies: ``<storage_path>/<run_name>`` (default name ``<name>-<stage_key>``)."""
    return join(spec.storage_path, spec.run_name or f"{spec.name}-{stage_key(spec)}")


def completed(run: str) -> dict | None:
    """The completion record of the stage run at ``run`` (its ``StageResult`` fields), None while unfinished."""
    done = join(run, COMPLETE)
    return read_json(done) if exists(done) else None


def _metrics_callback(path: str):
    import ray.train

    from doitray.train.checkpoint import SYNC

    class _WriteMetrics(ray.train.UserCallback):
        """Runs on the Train controller (same node as the driver): append every report to a JSONL file."""

        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                for rank, m in enumerate(metrics):
                    if m.get(SYNC):
                        continue
                    for step in [*m.get("history", ()), {k: v for k, v in m.items() if k != "history"}]:
                        f.write(json.dumps({"rank": rank, **step}, default=str) + "\n")

    return _WriteMetrics()


def _read_metrics(path: Path) -> tuple[list[dict], list[dict], list[int]]:
    if not path.exists():
        return [], [], []
    by_step: dict[int, dict] = {}
    shards: dict[int, dict] = {}
    starts: list[int] = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["rank"] == 0 and "resumed_from_step" in r:
            starts.append(int(r["resumed_from_step"]))
        if "shard_local_numel" in r:
            if r["rank"] == 0:
                shards = {}               # a new worker group: keep only the latest group's layout
            shards[r["rank"]] = {k.removeprefix("shard_"): v for k, v in r.items() if k.startswith("shard_")}
        if r["rank"] == 0:
            by_step[int(r["step"])] = r       # a step re-run after a failure: the last report wins
    rows = [{"step": st, "epoch": r["epoch"], "metric": m, "value": float(r[m])}
            for st, r in sorted(by_step.items()) for m in METRICS if r.get(m) is not None]
    return rows, [shards[k] for k in sorted(shards)], starts


def _generation(tokenizer, template: str) -> dict:
    from doitray.data.templates import get_template

    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for t in get_template(template).special_tokens:
        tid = tokenizer.convert_tokens_to_ids(t)
        if t in ("<eot>",) and tid is not None:
            stops.append(tid)
    return {"eos_token_id": stops[0] if len(stops) == 1 else stops}


def _packed_dataset(path: str):
    """The packed Parquet rows (numeric columns only) as a Ray Dataset, in file order.

    Read once here with pyarrow and handed to Ray Data as Arrow blocks: a ``read_parquet`` run by every
    worker costs seconds of task start-up per stage for a file of a few MB. Every rank iterates all rows
    (the stage's ``DataConfig`` splits nothing) and draws its micro-batches from the same seeded global
    batch order, so resume and worker-count changes are exact.
    """
    import ray.data

    from doitray.train.data import read_table

    return ray.data.from_arrow(read_table(path))


def _ingest_config():
    """Nothing split (every rank needs every row) and rows in file order (the seeded order relies on it)."""
    import ray.train

    opts = ray.train.DataConfig.default_ingest_options()
    opts.preserve_order = True
    return ray.train.DataConfig(datasets_to_split=[], execution_options=opts)


def _trainer_class():
    """``TorchTrainer`` whose placement-group cleaner is told to stop within a second.

    Ray 2.60 stops the cleaner with a wait of up to 12 s at the end of every run, while the cleaner's
    monitor thread sits in a state-API call that cannot finish on a local cluster: 12 s lost per stage.
    The cleaner still watches the controller while the run lasts.
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class StageTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            for cb in callbacks:
                if isinstance(cb, PlacementGroupCleanerCallback):
                    cb._stop_timeout = 1.0
            return callbacks

    return StageTrainer


def scaling_config(spec: StageSpec):
    """The stage's ``ray.train.ScalingConfig``: its workers, what each holds, and their placement strategy."""
    import ray.train

    res = spec.resources_per_worker or ({"CPU": 1, "GPU": 1} if spec.use_gpu else {"CPU": 1})
    return ray.train.ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu, resources_per_worker=res,
                                   placement_strategy=spec.placement_strategy)


def run_stage(spec: StageSpec) -> StageResult:
    """Train one stage (or return its recorded result if it already completed)."""
    import ray
    import ray.data
    import ray.train
    from transformers import AutoTokenizer

    from doitray.models.loading import ModelSource, export_source, resolve_model
    from doitray.scratch import fetch
    from doitray.train.loop import train_loop_per_worker

    key = stage_key(spec)
    run_name = spec.run_name or f"{spec.name}-{key}"
    run_uri = join(spec.storage_path, run_name)
    done_uri = join(run_uri, COMPLETE)
    record = completed(run_uri)
    if record is not None:
        return StageResult(**{**record, "reused": True})
    if not ray.is_initialized():
        raise RuntimeError("run_stage needs an active Ray (ray.init(...)); the study runner starts it")

    cache = Path(spec.cache_dir or os.path.expanduser("~/.cache/doitray"))
    cache.mkdir(parents=True, exist_ok=True)
    if spec.source is not None:
        source = ModelSource(**spec.source)
    elif spec.init_from:
        source = export_source(spec.init_from)
    else:
        source = resolve_model(spec.model, template=spec.template, cache_dir=cache, model_path=spec.model_path,
                               tokenizer_dir=spec.tokenizer_dir)
    tok = AutoTokenizer.from_pretrained(fetch(source.tokenizer_dir))
    datasets = {"train": _packed_dataset(spec.train_data)}
    if spec.valid_data:
        datasets["valid"] = _packed_dataset(spec.valid_data)
    metrics_file = cache / "runs" / run_name / "metrics.jsonl"
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    cfg = {"source": source.as_dict(), "settings": spec.settings.model_dump(), "policy": spec.checkpoint.model_dump(),
           "export_root": join(run_uri, "exports"), "run_uri": run_uri, "generation": _generation(tok, spec.template),
           "has_valid": bool(spec.valid_data), "cache_dir": str(cache), "fail_at_step": spec.fail_at_step,
           "fail_marker": spec.fail_marker, "stop_after_steps": spec.stop_after_steps, "tracking": spec.tracking}
    trainer = _trainer_class()(
        train_loop_per_worker, train_loop_config=cfg,
        datasets=datasets, dataset_config=_ingest_config(),
        scaling_config=scaling_config(spec),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=spec.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spec.checkpoint.num_to_keep),
            callbacks=[_metrics_callback(str(metrics_file))]),
    )
    # read by the controller, which Ray Train hands this process's value
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", POLL_INTERVAL_S)
    t0 = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - t0
    infos = []
    for name in list_dirs(join(run_uri, "exports")):
        info_uri = join(run_uri, "exports", name, "info.json")
        if exists(info_uri):
            infos.append(CheckpointInfo(**{k: v for k, v in read_json(info_uri).items()
                                           if k in CheckpointInfo.model_fields}))
    infos.sort(key=lambda c: c.step)
    rows, shards, starts = _read_metrics(metrics_file)
    final = next((c.hf_path for c in reversed(infos) if c.final), None)
    result = StageResult(name=spec.name, key=key, run_name=run_name, run_path=run_uri, checkpoints=infos,
                         metrics=rows, final_hf_path=final, shard_stats=shards, resumed_from=starts,
                         train_seconds=elapsed)
    if final is not None:
        write_json(done_uri, result.model_dump())
    return result
