"""The study file: a YAML document validated into a ``StudySpec``.

Every mistake is reported with its field path and, where the field has a closed set of values, the
allowed values (``StudyFileError``). Semantic checks that need more than one field (DMT without
specialist abilities, unknown model levels, …) run in ``StudySpec`` validators; checks that need the
data (volume larger than the pool) run in ``doitray.study.prepare.check_against_pool``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from doitray import abilities
from doitray.eval.benchmarks.spec import SuiteSpec, check_suite_list
from doitray.eval.scorers import check_metric
from doitray.eval.selection import SELECT_RULES
from doitray.study.stages import STRATEGIES  # the one strategy table (stages imports only the data layer)
from doitray.tracking import KINDS as TRACKERS
from doitray.train.settings import CheckpointPolicy

COMPOSITIONS_FIXED = ("balanced", "reconstruct", "maximum", "all")


class StudyFileError(ValueError):
    """A study file that cannot be used; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PretrainSpec(_Strict):
    """A base pretrained once per study on the suite's generic corpus (``data.synthetic_corpus``), plain text with
    the loss on every token, before any cell tunes it (``study.pretrain``). Unset fields take the defaults below;
    ``lr`` / ``seq_len`` / ``global_batch`` / ``micro_batch`` / ``epochs`` override the study's training preset."""

    tokens: int = Field(ge=1_000, description="corpus size in tokens (each token trained on once per epoch)")
    lr: float | None = Field(default=None, gt=0)
    seq_len: int | None = Field(default=None, ge=8)
    global_batch: int | None = Field(default=None, ge=1)
    micro_batch: int | None = Field(default=None, ge=1)
    epochs: int = Field(default=1, ge=1)
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)
    seed: int = 0
    # the generic corpus: which abilities' material it holds (default: all ten) and its seed (default: the suite's)
    corpus: dict[str, Any] = {}

    @field_validator("corpus")
    @classmethod
    def _corpus(cls, v: dict) -> dict:
        bad = sorted(set(v) - {"abilities", "seed"})
        if bad:
            raise ValueError(f"unknown corpus option(s) {bad}; allowed: abilities, seed")
        return v


class PretrainInit(_Strict):
    """``init: {pretrain: {...}}``."""

    pretrain: PretrainSpec


class ModelLevel(_Strict):
    """One level of the model factor: a preset (built from config or resolved from ``path``) or a path.

    ``init``: ``pretrained`` (the weights as given), ``scratch`` (random init of a config preset), or
    ``{pretrain: {tokens: N, ...}}``: a config preset pretrained once per study on the generated corpus."""

    preset: str | None = None
    path: str | None = None  # local HF dir or s3:// / gs:// prefix holding the weights
    gguf: str | None = None  # "smollm2" or a .gguf file path
    tier: str = "default"
    init: Literal["pretrained", "scratch"] | PretrainInit = "pretrained"
    # engine options for this model's cells, key by key over evaluation.engine (e.g. a 33B's
    # tensor_parallel_size); where and how fast it is served (eval.engine.SERVING_OPTIONS) is not in a cell's id
    engine: dict[str, Any] = {}

    @field_validator("init", mode="before")
    @classmethod
    def _init(cls, v):
        if isinstance(v, dict) and set(v) != {"pretrain"}:
            raise ValueError(f"init: a mapping holds one key, pretrain (got {sorted(v)}); or write pretrained / "
                             "scratch")
        if not isinstance(v, (dict, str, PretrainInit)):
            raise ValueError("init must be pretrained, scratch or {pretrain: {tokens: N, ...}}")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if not (self.preset or self.path or self.gguf):
            raise ValueError("give preset, path or gguf")
        if self.pretrain is not None:
            from doitray.models.presets import PRESETS

            if self.path or self.gguf or not self.preset or PRESETS.get(self.preset.lower()) is None \
                    or PRESETS[self.preset.lower()].source != "config":
                raise ValueError("init.pretrain builds the base from a config preset (tiny-xs, tiny-s, tiny-m, "
                                 "tiny-l); give preset without path or gguf")
        return self

    @field_serializer("init")
    def _dump_init(self, v):
        # as written (defaults left out): a pretrain option added later keeps the ids of levels that do not set it
        return {"pretrain": v.pretrain.model_dump(mode="json", exclude_defaults=True)} if isinstance(v, PretrainInit) \
            else v

    @property
    def pretrain(self) -> PretrainSpec | None:
        """The pretraining of this level (None for ``pretrained`` / ``scratch``)."""
        return self.init.pretrain if isinstance(self.init, PretrainInit) else None

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: dict) -> dict:
        from doitray.eval.engine import EngineOptions

        EngineOptions.from_any(v)
        return v


class TokenizerSpec(_Strict):
    """A tokenizer from a local path (or the model's), or one trained on the training pool."""

    path: str | None = None
    train_vocab_size: int | None = Field(default=None, ge=256, le=200_000)


class Factors(_Strict):
    """The study's factors; each is a list of levels and the grid is their product."""

    model: list[str] = Field(min_length=1)
    # a quantity of 0 is the base model scored without instruction tuning (the curves' volume-0 point)
    volume: list[int] | None = None  # total training examples, balanced over abilities
    per_ability: list[int] | None = None  # examples per ability
    frac: list[float] | None = None  # fraction of every source (DMT's 1, 1/4, …, 1/256)
    construction: list[Literal["curated", "synthetic", "mix"]] = ["curated"]
    composition: list[str] = ["balanced"]
    strategy: list[Literal[STRATEGIES]] = ["multitask"]  # type: ignore[valid-type]  # study.stages.TABLE
    replay_frac: list[float] = [0.0]
    seed: list[int] = [0]

    @field_validator("volume", "per_ability")
    @classmethod
    def _not_negative(cls, v):
        if v is not None and any(x < 0 for x in v):
            raise ValueError("levels must be integers >= 0 (0: the base model, scored without instruction tuning)")
        return v

    @field_validator("frac", "replay_frac")
    @classmethod
    def _fraction(cls, v):
        if v is not None and any(not 0 <= x <= 1 for x in v):
            raise ValueError("levels must be fractions in [0, 1]")
        return v

    @field_validator("composition")
    @classmethod
    def _composition(cls, v):
        for c in v:
            kind = c.split(":", 1)[0]
            if c not in COMPOSITIONS_FIXED and kind not in ("loo", "only", "recipe", "ratio"):
                raise ValueError(f"composition {c!r} is not one of {', '.join(COMPOSITIONS_FIXED)}, 'loo:<ability>', "
                                 "'only:<ability>', 'recipe:<name>' or 'ratio:<specialist frac>:<general frac>'")
            if kind == "ratio":
                parts = c.split(":")
                try:
                    assert len(parts) == 3 and all(0 <= float(p) <= 1 for p in parts[1:])
                except (AssertionError, ValueError):
                    raise ValueError(f"composition {c!r}: write ratio:<specialist frac>:<general frac>, "
                                     "e.g. ratio:1:0.015625") from None
        return v

    @model_validator(mode="after")
    def _one_quantity(self):
        given = [n for n in ("volume", "per_ability", "frac") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give only one of volume / per_ability / frac (got {', '.join(given)})")
        return self


class StrategyRoles(_Strict):
    """Which abilities are specialist and which general, for staged strategies."""

    specialist: list[str] = []
    general: list[str] = []
    order: list[str] | None = None  # sequential: specialist order (default: as listed)


class EvaluationSpec(_Strict):
    # typed entries (eval.benchmarks.SuiteSpec: kind pool | cmmlu | ceval | agieval | …); empty: the pool suite
    suites: list[SuiteSpec] = []
    select: Literal[SELECT_RULES] = "valid_loss"  # type: ignore[valid-type]  # eval.selection
    evaluate: Literal["selected", "all", "last"] = "selected"
    max_new_tokens: int = Field(default=64, ge=1)
    engine: dict[str, Any] = {}
    # valid-loss rows per ability at every checkpoint (None: 64); large models may want fewer
    valid_loss_per_ability: int | None = Field(default=None, ge=1)
    # run code suites even where the sandbox cannot isolate model-written programs (eval.sandbox)
    allow_unsafe_code: bool = False

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: dict) -> dict:
        from doitray.eval.engine import EngineOptions  # checked now, not after a cell has trained

        EngineOptions.from_any(v)
        return v

    @field_validator("suites")
    @classmethod
    def _suites(cls, v: list[SuiteSpec]) -> list[SuiteSpec]:
        return check_suite_list(v)

    @field_serializer("suites")
    def _dump_suites(self, v: list[SuiteSpec]) -> list[dict[str, Any]]:
        # as written (defaults left out): an entry of an earlier study file dumps, and hashes, as it did
        return [s.model_dump(mode="json", exclude_defaults=True) for s in v]


class TierSpec(_Strict):
    """Resources for the cells of one model tier; one Tuner per tier."""

    workers: int | tuple[int, int] = 1
    cpus_per_worker: float = Field(default=1, gt=0)
    gpus_per_worker: int = Field(default=0, ge=0)
    gpu_mem_gb: float = Field(default=80, gt=0)
    # extra Ray resources each Train worker holds: a custom resource that only the cell nodes offer keeps
    # cells off the driver / data nodes
    worker_resources: dict[str, float] = {}
    concurrency: int | None = Field(default=None, ge=1)
    # overrides training.micro_batch for this tier's cells (a memory knob: the global batch stays fixed, and
    # it is not part of a cell's id), e.g. a smaller micro-batch so that 16 workers divide the global batch
    micro_batch: int | None = Field(default=None, ge=1)
    # how a cell's Train workers are placed (a Ray placement-group strategy); auto: STRICT_PACK when a GPU cell
    # fits one node of gpus_per_node GPUs (its collectives stay on NVLink), else PACK
    placement: Literal["auto", "PACK", "STRICT_PACK", "SPREAD"] = "auto"
    gpus_per_node: int = Field(default=8, ge=1)

    def placement_strategy(self) -> str:
        """The Train workers' placement-group strategy (``placement`` with ``auto`` decided)."""
        if self.placement != "auto":
            return self.placement
        return "STRICT_PACK" if self.gpus_per_worker and self._max_gpus() <= self.gpus_per_node else "PACK"

    def _max_gpus(self) -> int:
        return max(self.worker_counts()) * self.gpus_per_worker

    @model_validator(mode="after")
    def _placement_fits(self):
        if self.placement == "STRICT_PACK" and self.gpus_per_worker and self._max_gpus() > self.gpus_per_node:
            raise ValueError(f"placement STRICT_PACK puts every worker on one node, but {self._max_gpus()} GPUs "
                             f"exceed gpus_per_node {self.gpus_per_node}; use PACK (or auto)")
        return self

    def worker_counts(self) -> range:
        """Every worker count this tier may run a cell on (an elastic [min, max] tier: all of them)."""
        lo, hi = (self.workers, self.workers) if isinstance(self.workers, int) else self.workers
        return range(lo, hi + 1)

    @field_validator("workers")
    @classmethod
    def _workers(cls, v):
        lo, hi = (v, v) if isinstance(v, int) else v
        if lo < 1 or hi < lo:
            raise ValueError("workers must be >= 1, or (min, max) with 1 <= min <= max")
        return v


class TrackingSpec(_Strict):
    """Where each cell's run is logged (``doitray.tracking``): one run per cell nested under one per study."""

    kind: Literal[TRACKERS] = "mlflow"  # type: ignore[valid-type]  # doitray.tracking.KINDS
    # mlflow: a tracking URI (default: sqlite:///<storage>/mlflow.db on a local storage; object storage needs
    # one); tensorboard: the log folder (default <storage>/tensorboard); wandb: its folder (default <storage>/wandb)
    uri: str | None = None
    experiment: str | None = None  # the MLflow experiment / W&B project / TensorBoard subfolder (default: name)


class StudySpec(_Strict):
    """A whole study: data, factors, training, checkpoints, evaluation, resources."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    storage: str
    description: str = ""
    sources: list[dict[str, Any]] = Field(min_length=1)
    template: Literal["doit", "fastchat", "hf"] = "doit"
    tokenizer: TokenizerSpec = TokenizerSpec()
    abilities: list[str] | None = None  # restrict the pool's abilities (default: all found)
    custom_abilities: dict[str, dict[str, Any]] = {}
    models: dict[str, ModelLevel] = Field(min_length=1)
    factors: Factors
    exclude: list[dict[str, Any]] = []  # prune cells whose levels match every key of an entry
    roles: StrategyRoles = StrategyRoles()
    recipes: dict[str, dict[str, Any]] = {}  # named recipes for composition "recipe:<name>"
    upsample: bool = False
    training: dict[str, Any] = {"preset": "tiny"}
    checkpoints: CheckpointPolicy = CheckpointPolicy()  # export is decided by evaluation (cells.checkpoint_policy)
    evaluation: EvaluationSpec = EvaluationSpec()
    resources: dict[str, TierSpec] = {"default": TierSpec()}
    # auto: as many cells at once as the cluster holds now; elastic: every cell's trial starts and its Train
    # run waits for resources, so cells start as nodes appear (autoscaling clusters); or a fixed number
    concurrency: int | Literal["auto", "elastic"] = "auto"
    driver_resource: str | None = None  # custom resource of non-preemptible driver nodes (TRAIN_DRIVER)
    # per_cell: each trial samples and packs its own data (in parallel across cells: clusters); upfront: the
    # driver does it for every pending cell before the first trial starts (one warm process: laptops)
    data_preparation: Literal["per_cell", "upfront"] = "per_cell"
    # read by the report: {features: {ability: {name: value}}, complexity: base_score|answer_length|answer_steps,
    # transference: share|gain} (doitray.analysis)
    analysis: dict[str, Any] = {}
    max_retries: int = Field(default=2, ge=0)
    tracking: TrackingSpec = TrackingSpec()

    def _check_memory(self, settings) -> None:
        _fits(self, settings)

    @model_validator(mode="after")
    def _cross_checks(self):
        for name, ab in self.custom_abilities.items():
            metric = check_metric(ab.get("metric", "exact"), field=f"custom_abilities.{name}.metric")
            abilities.register_from_spec(name, metric=metric,
                                         question_format=ab.get("question_format", "generate"),
                                         chance=float(ab.get("chance", 0.0)), display=ab.get("display"))
        unknown = [m for m in self.factors.model if m not in self.models]
        if unknown:
            raise ValueError(f"factors.model: {unknown} not defined under models (defined: {sorted(self.models)})")
        tiers = {lvl.tier for lvl in self.models.values()}
        missing = sorted(t for t in tiers if t not in self.resources)
        if missing:
            raise ValueError(f"models use tier(s) {missing} that resources does not define "
                             f"(defined: {sorted(self.resources)})")
        for ab in (self.abilities or []) + self.roles.specialist + self.roles.general:
            if not abilities.is_known(ab):
                raise ValueError(f"unknown ability {ab!r}; known: {', '.join(abilities.names())} "
                                 "(declare new ones under custom_abilities)")
        staged = [s for s in self.factors.strategy if s != "multitask"]
        if staged and (not self.roles.specialist or not self.roles.general):
            raise ValueError(f"factors.strategy {staged} needs roles.specialist and roles.general "
                             "(a staged strategy on single-ability data has nothing to stage)")
        if "sequential" in self.factors.strategy and self.roles.order:
            if sorted(self.roles.order) != sorted(self.roles.specialist):
                raise ValueError("roles.order must be a permutation of roles.specialist")
        if any(0 in (getattr(self.factors, q) or []) for q in ("volume", "per_ability", "frac")):
            scratch = [m for m in self.factors.model if not has_base_weights(self.models[m])]
            if scratch:
                raise ValueError(f"factors: a data quantity of 0 scores each model's base without instruction "
                                 f"tuning, but model level(s) {scratch} start from random weights (init: scratch "
                                 "or a config preset); give them init: {pretrain: {tokens: N}}, init: pretrained "
                                 "with a path, or drop the 0 level")
        if any(k > 0 for k in self.factors.replay_frac) and "dmt" not in self.factors.strategy:
            raise ValueError("factors.replay_frac > 0 applies to strategy dmt only; add dmt to factors.strategy")
        for c in self.factors.composition:
            kind, _, arg = c.partition(":")
            if kind == "recipe" and arg not in self.recipes:
                raise ValueError(f"factors.composition {c!r}: no recipe {arg!r} under recipes "
                                 f"(defined: {sorted(self.recipes)})")
            if kind in ("loo", "only") and not abilities.is_known(arg):
                raise ValueError(f"factors.composition {c!r}: unknown ability {arg!r}")
            if kind == "ratio" and not (self.roles.specialist and self.roles.general):
                raise ValueError(f"factors.composition {c!r} needs roles.specialist and roles.general")
        if self.tokenizer.path is None and self.tokenizer.train_vocab_size is None:
            paths = [m for m in self.models.values() if m.init == "pretrained" and (m.path or m.gguf)]
            if not paths:
                raise ValueError("tokenizer: give tokenizer.path, tokenizer.train_vocab_size, or a model with "
                                 "a path/gguf whose tokenizer is used")
        if "export" in self.checkpoints.model_fields_set:
            raise ValueError("checkpoints.export is not a study setting: evaluation.select and evaluation.evaluate "
                             "decide which checkpoints are exported")
        settings = training_settings(self.training, error=ValueError)
        for name, lvl in self.models.items():
            if lvl.pretrain is not None:
                try:
                    pretrain_settings(self.training, lvl, self.resources[lvl.tier])
                except ValidationError as e:
                    raise ValueError(f"models.{name}.init.pretrain: {_format_error(e).strip()}") from None
        _divides(self, settings)
        self._check_memory(settings)
        from doitray.data.recipes import Recipe

        for name, r in self.recipes.items():
            try:
                Recipe.model_validate(r)
            except ValidationError as e:
                raise ValueError(f"recipes.{name}: {_format_error(e).strip()}") from None
        for i, ex in enumerate(self.exclude):
            bad = sorted(set(ex) - set(Factors.model_fields))
            if bad:
                raise ValueError(f"exclude[{i}]: unknown factor(s) {bad}; factors: {sorted(Factors.model_fields)}")
        return self


def has_base_weights(level: ModelLevel) -> bool:
    """Whether a model level starts from trained weights (a path, a GGUF, an HF preset or a pretrain level): the
    base a data quantity of 0 scores."""
    from doitray.models.presets import PRESETS

    if level.pretrain is not None or level.path or level.gguf:
        return True
    preset = PRESETS.get((level.preset or "").lower())
    return level.init == "pretrained" and preset is not None and preset.source != "config"


def memory_fit(level: ModelLevel, tier: TierSpec, settings):
    """The memory plan of ``level`` on ``tier`` (None when it has no GPUs or no preset to size).

    The one fit check: a tier's smallest worker count is the worst case under FSDP (the fewest shards),
    so an elastic ``[min, max]`` tier must fit at ``min``.
    """
    from doitray.models.memory import memory_plan
    from doitray.models.presets import get_preset

    if not (tier.gpus_per_worker and level.preset):
        return None
    workers = tier.workers if isinstance(tier.workers, int) else tier.workers[0]
    return memory_plan(get_preset(level.preset), gpus=workers * tier.gpus_per_worker, gpu_mem_gib=tier.gpu_mem_gb,
                       seq_len=settings.seq_len, micro_batch=settings.micro_batch,
                       activation_checkpointing=settings.activation_checkpointing)


def tier_settings(settings, tier: TierSpec):
    """The training settings of a tier's cells (its micro-batch, when it sets one)."""
    return settings.model_copy(update={"micro_batch": tier.micro_batch}) if tier.micro_batch else settings


def train_resources(tier: dict) -> dict[str, Any]:
    """The ``StageSpec`` fields of a cell's Train workers, from its tier (a ``TierSpec`` dump): how many, what each
    holds, and their placement strategy (``TierSpec.placement_strategy``)."""
    workers = tier["workers"] if isinstance(tier["workers"], int) else tuple(tier["workers"])
    per = {"CPU": tier["cpus_per_worker"]}
    if tier["gpus_per_worker"]:
        per["GPU"] = tier["gpus_per_worker"]
    per.update(tier.get("worker_resources") or {})  # e.g. a node-type resource keeping cells off the head
    return {"num_workers": workers, "resources_per_worker": per, "use_gpu": bool(tier["gpus_per_worker"]),
            "placement_strategy": TierSpec(**tier).placement_strategy()}


def pretrain_settings(training: dict[str, Any], level: ModelLevel, tier: TierSpec):
    """The ``TrainSettings`` of a level's pretraining run: the study's ``training`` at the level's tier with the
    level's pretrain fields over it (a new ``lr`` keeps the schedule's end/peak ratio); one pass over the corpus
    per epoch, no ``max_steps``. Raises ``ValidationError`` when the combination is not valid."""
    from doitray.train.settings import TrainSettings

    ps = level.pretrain
    base = tier_settings(training_settings(training, error=ValueError), tier)
    over = ps.model_dump(include={"lr", "seq_len", "global_batch", "micro_batch", "warmup_ratio"}, exclude_none=True)
    if "lr" in over:
        over["end_lr"] = base.end_lr * over["lr"] / base.lr
    return TrainSettings(**{**base.model_dump(), **over, "epochs": ps.epochs, "max_steps": None, "seed": ps.seed})


def _divides(spec: "StudySpec", settings) -> None:
    """Each tier's micro-batches per step must split evenly over every worker count it allows."""
    for name in sorted({lvl.tier for lvl in spec.models.values()}):
        tier = spec.resources[name]
        s = tier_settings(settings, tier)
        field = f"resources.{name}.micro_batch" if tier.micro_batch else "training.micro_batch"
        if s.global_batch % s.micro_batch:
            raise ValueError(f"{field} {s.micro_batch} does not divide training.global_batch {s.global_batch}")
        per = s.global_batch // s.micro_batch
        counts = list(tier.worker_counts())
        bad = [w for w in counts if per % w]
        if bad:
            fix = [m for m in range(s.micro_batch, 0, -1)
                   if s.global_batch % m == 0 and all((s.global_batch // m) % w == 0 for w in counts)]
            hint = f"set resources.{name}.micro_batch: {fix[0]}" if fix else "choose worker counts that divide it"
            raise ValueError(f"resources.{name}.workers {bad[0]}: global_batch/micro_batch = {s.global_batch}/"
                             f"{s.micro_batch} = {per} micro-batches per step ({field}) cannot be split over "
                             f"{bad[0]} workers; {hint}")


def _fits(spec: "StudySpec", settings) -> None:
    for name, lvl in spec.models.items():
        tier = spec.resources[lvl.tier]
        mp = memory_fit(lvl, tier, tier_settings(settings, tier))
        if mp is not None and not mp.fits:
            need = f"needs {mp.min_gpus} GPUs" if mp.min_gpus else "does not fit at any GPU count"
            raise ValueError(f"models.{name}: {lvl.preset} does not fit {mp.gpus} GPUs of {tier.gpu_mem_gb:g} GB "
                             f"under FSDP2 at seq {settings.seq_len}, micro-batch {settings.micro_batch} ({need}; "
                             f"see `doitray plan {lvl.preset}`)")


def training_settings(training: dict[str, Any], *, error: type[Exception] = StudyFileError):
    """``TrainSettings`` from a study's ``training`` mapping (``preset`` + overrides)."""
    from doitray.train.settings import TrainSettings

    over = dict(training)
    preset = over.pop("preset", None)
    try:
        return TrainSettings.preset(preset, **over) if preset else TrainSettings(**over)
    except (ValidationError, ValueError, TypeError) as e:
        msg = _format_error(e).strip() if isinstance(e, ValidationError) else str(e)
        raise error(f"training: {msg}") from None


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(study)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _expand_env(obj: Any) -> Any:
    if isinstance(obj, str):
        return os.path.expandvars(obj)
    if isinstance(obj, dict):
        return {k: _expand_env(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand_env(v) for v in obj]
    return obj


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def unset_variables(obj: Any, where: str = "") -> list[tuple[str, str]]:
    """``(field, NAME)`` for each ``$NAME`` / ``${NAME}`` still in ``obj`` after expansion: NAME is not set."""
    if isinstance(obj, str):
        return [(where or "(study)", a or b) for a, b in _VAR.findall(obj)]
    if isinstance(obj, dict):
        return [u for k, v in obj.items() if where or k != "description"
                for u in unset_variables(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, list):
        return [u for i, v in enumerate(obj) for u in unset_variables(v, f"{where}[{i}]")]
    return []


def unset_error(source: str, unset: list[tuple[str, str]]) -> StudyFileError:
    """One line naming each unset variable, the fields that use it, and the fix."""
    fields: dict[str, list[str]] = {}
    for field, var in unset:
        fields.setdefault(var, []).append(field)
    used = "; ".join(f"{v} in {', '.join(f[:3])}" + (f" (+{len(f) - 3} more)" if len(f) > 3 else "")
                     for v, f in fields.items())
    plural = len(fields) > 1
    return StudyFileError(f"{source}: environment variable{'s' if plural else ''} not set: {used} — export "
                          f"{' '.join(f'{v}=<path>' for v in fields)} (the study file's comments say what "
                          f"{'each' if plural else 'it'} names) and run again")


def parse_study(data: dict[str, Any], *, source: str = "<study>", base_dir: str | None = None,
                overrides: dict[str, Any] | None = None,
                unset_env: list[tuple[str, str]] | None = None) -> StudySpec:
    """Validate a study document; relative local paths are resolved against ``base_dir``.

    A ``$NAME`` / ``${NAME}`` whose variable is not set stays as written; given a list as ``unset_env``,
    each is appended to it as ``(field, NAME)`` (the commands turn them into ``unset_error``).
    """
    if not isinstance(data, dict):
        raise StudyFileError(f"{source}: a study file is a YAML mapping, got {type(data).__name__}")
    data = _expand_env({**data, **(overrides or {})})
    if unset_env is not None:
        unset_env.extend(unset_variables(data))
    if base_dir:
        data = _resolve_paths(data, base_dir)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as e:
        raise StudyFileError(f"{source}: invalid study file\n{_format_error(e)}") from None


def _resolve(p: Any, base: str) -> Any:
    if isinstance(p, str) and p and "://" not in p and not os.path.isabs(p) and not p.startswith("~"):
        return str((Path(base) / p).resolve())
    return os.path.expanduser(p) if isinstance(p, str) else p


def _resolve_suite(s: Any, base: str) -> Any:
    """A suite entry with its benchmark path and its judge's model dir resolved (an endpoint URL is kept)."""
    if not isinstance(s, dict):
        return s
    out = {**s, "path": _resolve(s["path"], base)} if s.get("path") else dict(s)
    if isinstance(s.get("judge"), dict) and s["judge"].get("path"):
        out["judge"] = {**s["judge"], "path": _resolve(s["judge"]["path"], base)}
    return out


def _resolve_paths(data: dict[str, Any], base: str) -> dict[str, Any]:
    data = dict(data)
    if "storage" in data:
        data["storage"] = _resolve(data["storage"], base)
    if isinstance(data.get("sources"), list):
        data["sources"] = [{**s, "path": _resolve(s["path"], base)} if isinstance(s, dict) and s.get("path") else s
                           for s in data["sources"]]
    if isinstance(data.get("models"), dict):
        data["models"] = {k: ({**v, **{f: _resolve(v[f], base) for f in ("path",) if v.get(f)}}
                              if isinstance(v, dict) else v) for k, v in data["models"].items()}
    if isinstance(data.get("tokenizer"), dict) and data["tokenizer"].get("path"):
        data["tokenizer"] = {**data["tokenizer"], "path": _resolve(data["tokenizer"]["path"], base)}
    ev = data.get("evaluation")
    if isinstance(ev, dict) and isinstance(ev.get("suites"), list):
        data["evaluation"] = {**ev, "suites": [_resolve_suite(s, base) for s in ev["suites"]]}
    return data


def load_study(path: str | os.PathLike, *, overrides: dict[str, Any] | None = None,
               base_dir: str | None = None, unset_env: list[tuple[str, str]] | None = None) -> StudySpec:
    """Read and validate a study YAML file.

    Relative paths inside it resolve against ``base_dir`` (default: the current directory, so that
    ``python experiments/grid.py`` from the repository root and ``ray job submit --working-dir .`` agree).
    """
    p = Path(path)
    if not p.is_file():
        raise StudyFileError(f"study file {path} does not exist — give the path of a study YAML "
                             "(e.g. experiments/studies/default.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StudyFileError(f"{path}: not valid YAML: {e}") from None
    return parse_study(data, source=str(path), base_dir=base_dir or os.getcwd(), overrides=overrides,
                       unset_env=unset_env)


def missing_paths(spec: StudySpec, *, models: bool = True) -> list[tuple[str, str]]:
    """``(field, path)`` for each local path of ``spec`` that does not exist: the sources, and with ``models``
    the model, GGUF, tokenizer and suite paths (object-store URIs are read later, not checked here)."""
    def gone(p: Any) -> bool:
        return isinstance(p, str) and bool(p) and "://" not in p and not os.path.exists(p)

    out = [(f"sources[{i}].path", s["path"]) for i, s in enumerate(spec.sources) if gone(s.get("path"))]
    if models:
        for name, m in spec.models.items():
            out += [(f"models.{name}.{f}", v) for f, v in (("path", m.path), ("gguf", m.gguf))
                    if gone(v) and (f == "path" or v.endswith(".gguf"))]
        if gone(spec.tokenizer.path):
            out.append(("tokenizer.path", spec.tokenizer.path))
        for i, s in enumerate(spec.evaluation.suites):
            out += [(f"evaluation.suites[{i}].{f}", p) for f, p in (("path", s.path),
                                                                    ("judge.path", s.judge and s.judge.path)) if gone(p)]
    return out


def check_paths(spec: StudySpec, *, models: bool = True) -> None:
    """Fail in one line, naming each field, when a local path the study reads does not exist."""
    gone = missing_paths(spec, models=models)
    if gone:
        raise StudyFileError("; ".join(f"{f}: {p} does not exist" for f, p in gone[:4])
                             + (f" (+{len(gone) - 4} more)" if len(gone) > 4 else "")
                             + " — fix the path (or the variable it is built from); data and model paths must be "
                             "readable from every node")
