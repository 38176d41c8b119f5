"""One cell as a Ray Tune trial: its stages' data and Train runs, checkpoint selection, evaluation, store.

``run_cell`` is the trial function; ``CellRun`` does the work. Results are written to the store as they
are produced: checkpoints and training metrics after each stage, predictions and scores after each
(checkpoint, suite), so an interruption loses at most the step in flight. Every step is idempotent and
keyed by content: mixtures and packed data are cached by key, each stage's Train run is named by its
stage key (Train V2 resumes it from its latest checkpoint; a completed stage returns its recorded
result), and a (checkpoint, suite) already scored is skipped.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from typing import Any

from doitray.data.recipes import Part, Recipe
from doitray.data.sources import Pool
from doitray.models.params import model_params
from doitray.scratch import fetch
from doitray.store import ResultsStore, part_key
from doitray.study.cells import Cell, checkpoint_policy, is_base
from doitray.study.owners import owned
from doitray.study.prepare import local_cache
from doitray.study.stages import stage_recipes
from doitray.study.spec import TierSpec, tier_settings, train_resources, training_settings
from doitray.tracking import cell_run

VALID_PER_ABILITY = 64  # default valid-loss rows per ability (a stable loss, cheap for tiny models every epoch)


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if "://" in root else os.path.join(root, *parts)


class CellRun:
    """Runs one cell given its Tune config (``cell``) and the study's results store."""

    def __init__(self, cell: dict, store: ResultsStore):
        self.cell = cell
        self.cid = cell["cell_id"]
        self.content = cell["content"]
        self.levels = self.content["levels"]
        self.shared = cell["shared"]
        self.store = store
        # what the driver shared (storage URIs on a cluster) is fetched into this node's folder
        self.pool = Pool.load(fetch(self.shared["pool"]))
        self.cache = local_cache(self.shared["cache"], self.shared.get("study") or self.content["study"])
        self.seed = int(self.levels["seed"])
        tier = TierSpec(**cell["resources"])
        self.base = is_base(self.levels)  # scored as it starts, nothing trained (a base cell has no training)
        self.settings = None if self.base else tier_settings(training_settings(self.content["training"]),
                                                             tier).model_copy(update={"seed": self.seed})
        self.evaluation = self.content["evaluation"]
        self.seconds = {"data_s": 0.0, "train_s": 0.0, "eval_s": 0.0}   # wall time per phase

    def _timed(self, phase: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    @property
    def track(self):
        """The cell's tracked run, nested under the study's (``doitray.tracking``; a no-op when off or down)."""
        return cell_run(self.cell.get("tracking"), self.cid,
                        name=Cell(self.cid, self.content, self.cell["tier"], None).label())

    def _track_prefix(self, stage: int) -> str:
        """Metric keys of a staged strategy carry their stage (``s1/train_loss``); one stage's do not."""
        return f"s{stage}/" if len(stage_recipes(self.content)) > 1 else ""

    # -- data ---------------------------------------------------------------------------------
    def abilities(self) -> list[str]:
        return self.content.get("abilities") or self.pool.abilities(split="train")

    def _packed(self, recipe: Recipe):
        from doitray.data.pipeline import tokenize_and_pack
        from doitray.data.sampling import sample_mixture

        mix = sample_mixture(self.pool, recipe, self.seed, self.cache)
        packed = tokenize_and_pack(mix.path, self.shared["tokenizer"], self.content["template"], self.settings.seq_len,
                                   self.cache, pretokenized=fetch(self.shared["tokens"]) if self.shared.get("tokens")
                                   else None)
        return mix, packed

    def valid_data(self):
        """Packed valid rows of the cell's abilities (``evaluation.valid_loss_per_ability`` each, at most) for
        valid loss."""
        from doitray.data.sampling import available

        per = self.evaluation.get("valid_loss_per_ability") or VALID_PER_ABILITY
        part = Part(name="valid-loss", split="valid", abilities=tuple(self.abilities()), per_ability=per)
        have = available(self.pool, part)
        caps = {a: min(per, have.get(a, 0)) for a in self.abilities() if have.get(a, 0)}
        if not caps:
            return None
        recipe = Recipe(parts=(part.model_copy(update={"per_ability": caps, "abilities": tuple(caps)}),), name="valid")
        return self._packed(recipe)[1]

    def materialize(self) -> None:
        """Sample and pack every stage's data and the valid data into the cache (no training)."""
        if self.base:
            return
        self.valid_data()
        for _, recipe in stage_recipes(self.content):
            self._packed(recipe)

    # -- training -----------------------------------------------------------------------------
    def _model_fields(self, first: bool = True) -> dict[str, Any]:
        from doitray.models.loading import level_source

        model, model_path = level_source(self.content["model"])
        # the first stage starts from the level the driver resolved once (``prepare.prepare_models``); a later
        # one from the previous stage's export (``init_from``)
        source = (self.shared.get("models") or {}).get(self.levels["model"]) if first else None
        return {"model": model, "model_path": model_path, "source": source}

    def _resources(self) -> dict[str, Any]:
        return train_resources(self.cell["resources"])

    def train(self) -> tuple[list[tuple[int, Any]], int, dict[str, int]]:
        """Run the strategy's stages in order (``study.stages``), each starting from the previous stage's final
        HF export (``init_from``); returns [(stage index, StageResult)], training tokens, examples per ability.

        A stage already completed (same stage key: the same data, settings and starting weights) is returned
        from its record without training again: DMT cells that differ only in k share stage 1. A stage shared
        with a running cell is trained by one of them; the others wait for it (``study.owners``)."""
        from doitray.train.stage import METRICS, StageSpec

        valid = self._timed("data_s", self.valid_data)
        storage = _join(self.store.uri, "train")
        init_from, results, tokens, examples = None, [], 0, {}
        stages = stage_recipes(self.content)
        for i, (name, recipe) in enumerate(stages):
            mix, packed = self._timed("data_s", self._packed, recipe)
            spec = StageSpec(name=name, tokenizer_dir=self.shared["tokenizer"], template=self.content["template"],
                             train_data=packed.path, valid_data=valid.path if valid else None, settings=self.settings,
                             checkpoint=checkpoint_policy(self.content), init_from=init_from, storage_path=storage,
                             max_failures=int(self.cell.get("max_retries", 0)),
                             cache_dir=os.path.join(self.cache, "models"), **self._model_fields(first=i == 0),
                             **self._resources(), tracking=self.track.worker_ref(prefix=self._track_prefix(i),
                                                                                 keys=METRICS))
            resumed_from, res = self._timed("train_s", self._run_stage, spec)  # a shared stage's wait included
            self._record_stage(i, res, resumed_from)
            if res.reused or not self.track.live:  # no Train worker logged this stage into the cell's run
                self.track.log_rows((self._track_prefix(i) + m["metric"], m["value"], m["step"]) for m in res.metrics)
            if res.final_hf_path is None:
                raise RuntimeError(f"stage {name!r} ({i + 1} of {len(stages)}) finished without a final HF export "
                                   f"(run {res.run_path}): the next stage and the evaluation start from it")
            results.append((i, res))
            init_from = res.final_hf_path
            tokens += int(packed.n_tokens) * self.settings.epochs
            for a, n in mix.counts.items():
                examples[a] = examples.get(a, 0) + n
        return results, tokens, examples

    def _run_stage(self, spec) -> tuple[int, Any]:
        """(the step the stage resumes from, its ``StageResult``): trained here, or by the cell that owns it."""
        from doitray.train.stage import completed, run_stage, run_uri

        run = run_uri(spec)
        with owned(self.content["study"], run, self.cid, lambda: completed(run) is not None):
            return latest_step(run), run_stage(spec)

    def _record_stage(self, i: int, res, resumed_from: int) -> None:
        now = time.time()
        rows = [{"cell_id": self.cid, "checkpoint": ckpt_name(i, c.name), "stage": i, "stage_name": res.name,
                 "step": c.step, "epoch": float(c.epoch), "path": c.path, "hf_path": c.hf_path,
                 "valid_loss": c.valid_loss, "selected": False, "created_at": now} for c in res.checkpoints]
        self.store.write("checkpoints", part_key(self.cid, i), rows)
        metrics = [{"cell_id": self.cid, "stage": i, "step": int(m["step"]), "epoch": float(m.get("epoch") or 0),
                    "metric": m["metric"], "value": float(m["value"])} for m in res.metrics
                   if isinstance(m.get("value"), (int, float))]
        metrics.append({"cell_id": self.cid, "stage": i, "step": 0, "epoch": 0.0, "metric": "resumed_from_step",
                        "value": float(resumed_from)})
        # 1: this cell found the stage complete (trained by another cell sharing it, or by an earlier attempt)
        metrics.append({"cell_id": self.cid, "stage": i, "step": 0, "epoch": 0.0, "metric": "stage_reused",
                        "value": float(res.reused)})
        self.store.write("train_metrics", part_key(self.cid, i), metrics)

    # -- evaluation ---------------------------------------------------------------------------
    def suites(self, split: str):
        """The cell's evaluation suites of ``split`` (``eval.benchmarks.build_suites``): the pool's items of the
        cell's abilities (+ OOD) on every split, the study's benchmark suites on test."""
        from doitray.eval.benchmarks import build_suites

        return build_suites(self.evaluation["suites"], split, pool=self.pool, abilities=self.abilities(),
                            max_tokens=self.evaluation["max_new_tokens"])

    def _scores(self, name: str, split: str) -> list[dict]:
        df = self.store.read("scores")
        return df[(df["cell_id"] == self.cid) & (df["checkpoint"] == name) & (df["split"] == split)].to_dict("records")

    def _score(self, hf: str, name: str, stage: int, step: int, epoch: float, split: str) -> list[dict]:
        """Score the HF weights at ``hf`` on ``split`` as checkpoint ``name`` (stored and tracked); its rows."""
        from doitray.eval.evaluate import evaluate_and_store

        evaluate_and_store(self.store, hf, self.suites(split), template=self.content["template"], cell_id=self.cid,
                           checkpoint=name, stage=stage, step=step, epoch=epoch,
                           engine_options=engine_options(hf, self.cell, self.cache), seed=self.seed,
                           allow_unsafe_code=bool(self.evaluation.get("allow_unsafe_code")))
        return self._track_scores(stage, self._scores(name, split))

    def evaluate(self, results: list[tuple[int, Any]]) -> None:
        """Pick the checkpoint to report (``eval.selection.select_checkpoint``, the study's rule) and score what
        the study asks for on test."""
        from doitray.eval.selection import select_checkpoint

        final_stage, final = results[-1]
        ckpts = [c for c in final.checkpoints if c.hf_path]
        if not ckpts:
            raise RuntimeError(f"stage {final.name} exported no checkpoint to evaluate")
        ev = self.evaluation

        def run(c, stage: int, split: str) -> list[dict]:
            return self._score(c.hf_path, ckpt_name(stage, c.name), stage, c.step, float(c.epoch), split)

        by_name = {c.name: c for c in ckpts}
        rows = [{"checkpoint": c.name, "step": c.step, "valid_loss": c.valid_loss} for c in ckpts]
        selected = by_name[select_checkpoint(rows, ev["select"], lambda n: run(by_name[n], final_stage, "valid"))]
        targets: list[tuple[int, Any]] = [(final_stage, selected)]
        if ev["evaluate"] == "last":
            targets = [(final_stage, ckpts[-1])]
        elif ev["evaluate"] == "all":
            targets = [(i, c) for i, res in results for c in res.checkpoints if c.hf_path]
        for stage, c in targets:
            run(c, stage, "test")
        self._mark_selected(final_stage, selected.name)

    def _track_scores(self, stage: int, rows: list[dict]) -> list[dict]:
        """Each score as a metric per (split, suite, ability) at its checkpoint's step, e.g. ``test/doit/math``."""
        self.track.log_rows((f"{self._track_prefix(stage)}{r['split']}/{r['suite']}/{r['ability']}", r["value"],
                             r["step"]) for r in rows)
        return rows

    def _mark_selected(self, stage: int, name: str) -> None:
        self.track.set_tags({"doitray.selected_checkpoint": ckpt_name(stage, name)})
        df = self.store.read("checkpoints")
        rows = df[(df["cell_id"] == self.cid) & (df["stage"] == stage)].to_dict("records")
        for r in rows:
            r["selected"] = r["checkpoint"] == ckpt_name(stage, name)
        self.store.write("checkpoints", part_key(self.cid, stage), rows)

    def evaluate_base(self) -> None:
        """Score the model level's starting weights on test (a base cell): its one checkpoint, ``s0-base``."""
        hf = ((self.shared.get("models") or {}).get(self.levels["model"]) or {}).get("hf_dir")
        if not hf:
            raise RuntimeError(f"model level {self.levels['model']!r} has no weights to score as its base (a config "
                               "preset from scratch); a data quantity of 0 needs a pretrained or pretrain level")
        name = ckpt_name(0, "base")
        self.store.write("checkpoints", part_key(self.cid, 0), [
            {"cell_id": self.cid, "checkpoint": name, "stage": 0, "stage_name": "base", "step": 0, "epoch": 0.0,
             "path": None, "hf_path": hf, "valid_loss": None, "selected": True, "created_at": time.time()}])
        self._score(hf, name, 0, 0, 0.0, "test")
        self.track.set_tags({"doitray.selected_checkpoint": name})

    # -- all of it ----------------------------------------------------------------------------
    def run(self) -> dict:
        self.track.log_params({**self.levels, "cell_id": self.cid, "study": self.content["study"]})
        self.track.set_tags({"doitray.state": "running"})
        if self.base:
            self._timed("eval_s", self.evaluate_base)
            return {"model_params": model_params(self.content["model"]), "train_tokens": 0, "per_ability": 0.0,
                    "volume": 0, "recipe": "[]", **self.seconds}
        results, tokens, examples = self.train()
        self._timed("eval_s", self.evaluate, results)
        n_ab = max(1, len(examples))
        return {"model_params": model_params(self.content["model"]), "train_tokens": tokens,
                "per_ability": sum(examples.values()) / n_ab if self.levels.get("per_ability") is None
                else float(self.levels["per_ability"]),
                "volume": self.levels.get("volume") or sum(examples.values()),
                "recipe": json.dumps([{"stage": n, "recipe": json.loads(r.model_dump_json())}
                                      for n, r in stage_recipes(self.content)]),
                **self.seconds}


def cell_engine(cell: dict) -> dict:
    """A cell's engine options (from its Tune config): the study's ``evaluation.engine``, the model level's
    ``engine`` over it key by key, and the engine kind from the cell's tier (``gpu``: ``gpus_per_worker > 0``)
    unless either sets it: decided by what the study says, not by which nodes are up when the cell resumes."""
    level = cell.get("engine")
    if level is None:  # a config from before levels had engine options
        level = cell["content"]["model"].get("engine")
    opts = {**(cell["content"]["evaluation"].get("engine") or {}), **(level or {})}
    opts.setdefault("gpu", bool(cell["resources"].get("gpus_per_worker")))
    return opts


def engine_options(hf_dir: str, cell: dict, cache: str | None = None) -> dict:
    """The engine options a cell serves ``hf_dir`` with: ``cell_engine``, with ``max_model_len`` capped at what
    the checkpoint supports (and a shared engine's folder in the study's cache)."""
    from doitray.eval.engine import fit_to_checkpoint

    opts = cell_engine(cell)
    if opts.get("shared") and cache:
        opts.setdefault("shared_dir", os.path.join(cache, "engines"))
    return fit_to_checkpoint(opts, hf_dir)


def ckpt_name(stage: int, name: str) -> str:
    """A checkpoint's name in the store: unique within a cell across stages."""
    return f"s{stage}-{name}"


def latest_step(run_uri: str) -> int:
    """The step of the latest Train checkpoint already in a run directory (0 when it starts fresh)."""
    from doitray.train.storage import list_dirs

    try:
        steps = [int(d[4:]) for d in list_dirs(run_uri) if d.startswith("step") and d[4:].isdigit()]
    except Exception:
        return 0
    return max(steps, default=0)


def cell_row(cell: Cell | dict, *, state: str, attempts: int, now: float, **extra: Any) -> dict:
    """The ``cells`` table row for a cell (factor levels as columns, everything as JSON too)."""
    content = cell.content if isinstance(cell, Cell) else cell["content"]
    cid = cell.cell_id if isinstance(cell, Cell) else cell["cell_id"]
    tier = cell.tier if isinstance(cell, Cell) else cell["tier"]
    lv = content["levels"]
    row = {
        "cell_id": cid, "study": content["study"], "state": state, "attempts": attempts, "tier": tier,
        "model": lv["model"], "construction": lv["construction"], "composition": lv["composition"],
        "volume": lv.get("volume"), "per_ability": lv.get("per_ability"), "strategy": lv["strategy"],
        "replay_frac": lv["replay_frac"], "seed": lv["seed"], "factors": json.dumps(lv, sort_keys=True),
        "recipe": json.dumps(content.get("recipe")), "updated_at": now,
    }
    row.update(extra)
    return row


def _latest(store: ResultsStore, cell_id: str) -> dict:
    df = store.read("cells")
    rows = df[df["cell_id"] == cell_id].to_dict("records")
    return rows[0] if rows else {}


def run_cell(config: dict) -> None:
    """The Tune trial function: runs one cell, recording its state in the store."""
    from ray import tune

    cell = config["cell"]
    store = ResultsStore(cell["store"])
    prev = _latest(store, cell["cell_id"])
    attempts = int(prev.get("attempts") or 0) + 1
    started = time.time()
    keep = {k: prev.get(k) for k in ("model_params", "train_tokens") if prev.get(k) is not None}
    store.write("cells", cell["cell_id"], [cell_row(cell, state="running", attempts=attempts, now=started,
                                                    started_at=started, **keep)])
    try:
        summary = CellRun(cell, store).run()
    except BaseException as e:
        err = "".join(traceback.format_exception_only(type(e), e)).strip()
        tb = traceback.format_exc(limit=8)
        store.write("cells", cell["cell_id"], [cell_row(cell, state="failed", attempts=attempts, now=time.time(),
                                                        started_at=started, error=f"{err}\n{tb}"[-4000:], **keep)])
        cell_run(cell.get("tracking"), cell["cell_id"]).end("FAILED", tags={"doitray.state": "failed",
                                                                             "doitray.error": err[:500]})
        raise
    now = time.time()
    store.write("cells", cell["cell_id"], [cell_row(cell, state="done", attempts=attempts, now=now, started_at=started,
                                                    finished_at=now, **summary)])
    cell_run(cell.get("tracking"), cell["cell_id"]).end(tags={"doitray.state": "done"})
    tune.report({"done": 1.0, "wall_s": now - started, **{k: float(v) for k, v in summary.items()
                                                           if isinstance(v, (int, float))}})
