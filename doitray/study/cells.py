"""Cells: the study grid expanded into one unit of work per factor combination × seed.

A cell's id is a hash of everything that determines its results (factor levels, model, data sources,
training and evaluation settings), not of its resources: the same id means the same work, so a
re-run skips or resumes it, and a changed setting makes a new cell.

Levels that do not apply are normalised before hashing so that equivalent cells collapse into one:
``replay_frac`` only applies to DMT, a quantity (volume / per_ability / frac) does not apply to the
compositions that fix their own sizes (``reconstruct``, ``maximum``, ``all``, ``ratio:…``, ``recipe:…``),
and roles only matter to staged strategies, ratio compositions and the multi-task cells of a strategy comparison
whose data holds abilities outside the roles (``_roles_limit_multitask``).

A data quantity of 0 is a **base cell**: the model level's starting weights scored without instruction tuning (the
curves' volume-0 point, the paper's "base"). One per model level: construction, composition, strategy and seed do
not apply (``construction`` is None, the seed the study's first), and neither the training nor the data's
sampling settings enter its id.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from doitray import abilities as registry
from doitray.eval.engine import SERVING_OPTIONS
from doitray.study.spec import ModelLevel, StudySpec, TierSpec
from doitray.study.stages import QUANTITIES as QUANTITY_FACTORS
from doitray.study.stages import is_base
from doitray.train.settings import CheckpointPolicy

FIXED_SIZE_COMPOSITIONS = ("reconstruct", "maximum", "all")


def content_hash(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-able value (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]


@dataclass(frozen=True)
class Cell:
    """One unit of work: its content (hashed into ``cell_id``) and the resources to run it with."""

    cell_id: str
    content: dict[str, Any]
    tier: str
    resources: TierSpec = field(compare=False)
    engine: dict[str, Any] = field(default_factory=dict, compare=False)  # the model level's engine options

    @property
    def levels(self) -> dict[str, Any]:
        return self.content["levels"]

    def label(self) -> str:
        """A short human-readable description of the cell's levels."""
        lv = self.levels
        qty = next((f"{k}={lv[k]}" for k in QUANTITY_FACTORS if lv.get(k) is not None), "")
        if is_base(lv):
            return f"{lv['model']} base ({qty}, not tuned)"
        bits = [lv["model"], lv["construction"], lv["composition"], qty, lv["strategy"]]
        if lv["strategy"] == "dmt":
            bits.append(f"k={lv['replay_frac']:g}")
        bits.append(f"seed={lv['seed']}")
        return " ".join(b for b in bits if b)

    def to_config(self) -> dict[str, Any]:
        """What a Tune trial receives (plain JSON)."""
        return {"cell_id": self.cell_id, "content": self.content, "tier": self.tier,
                "resources": self.resources.model_dump(), "engine": dict(self.engine)}


def _normalise(levels: dict[str, Any], first_seed: int = 0) -> dict[str, Any]:
    lv = dict(levels)
    if is_base(lv):
        return {**lv, "construction": None, "composition": "balanced", "strategy": "multitask", "replay_frac": 0.0,
                "seed": first_seed}
    if lv["strategy"] != "dmt":
        lv["replay_frac"] = 0.0
    if lv["composition"] in FIXED_SIZE_COMPOSITIONS or lv["composition"].startswith(("ratio:", "recipe:")):
        for q in QUANTITY_FACTORS:
            lv[q] = None
    return lv


def _checkpoints_content(policy: CheckpointPolicy) -> dict[str, Any]:
    """The checkpoint cadence as cell content: ``num_to_keep`` is None unless the study file sets it (as
    before the study and Train shared one policy model, so existing cell ids stand)."""
    kept = policy.num_to_keep if "num_to_keep" in policy.model_fields_set else None
    return {"every": policy.every, "every_n_steps": policy.every_n_steps, "num_to_keep": kept}


def _model_content(level: ModelLevel) -> dict[str, Any]:
    """A model level as cell content: without its tier and its engine's serving options (``SERVING_OPTIONS``,
    like resources); engine options that change the answers are content when set (levels without keep their ids)."""
    out = level.model_dump(exclude={"tier", "engine"})
    answers = {k: v for k, v in level.engine.items() if k not in SERVING_OPTIONS}
    if answers:
        out["engine"] = answers
    return out


def _identity(content: dict[str, Any]) -> dict[str, Any]:
    """What a cell's id hashes: its content without the benchmark suites (``evaluation.suites`` entries of a kind
    other than pool). They are scored on the test pass only, each in its own (checkpoint, suite) part, and change
    neither the training, the checkpoint selected nor the pool suite's scores: a study that adds one keeps its
    cells (a done cell is re-opened to score it, ``runner``)."""
    # allow_unsafe_code permits work, it does not change it
    ev = {k: v for k, v in content["evaluation"].items() if k != "allow_unsafe_code"}
    suites = ev.get("suites") or []
    pool = [s for s in suites if s.get("kind", "pool") == "pool"]
    if pool == [{}]:  # the pool suite at its defaults: the same work as an empty list
        pool = []
    elif suites and not pool:  # benchmarks only: no pool suite at all
        pool = [{"kind": "none"}]
    return {**content, "evaluation": {**ev, "suites": pool}}


def checkpoint_policy(content: dict[str, Any]) -> CheckpointPolicy:
    """The Train checkpoint policy of a cell: its cadence, and exports of every checkpoint that may be
    selected or evaluated (only the last one when the study keeps the last)."""
    ev, ck = content["evaluation"], content["checkpoints"]
    export = "all" if ev["evaluate"] == "all" or ev["select"] in ("valid_avg", "valid_loss") else "last"
    return CheckpointPolicy(every=ck["every"], every_n_steps=ck.get("every_n_steps"),
                            num_to_keep=ck.get("num_to_keep") or 2, export=export)


_ROLE_LIMITED = ("balanced", "all", "loo")  # the compositions a strategy comparison's roles limit (study.stages)


def _roles_limit_multitask(spec: StudySpec) -> bool:
    """Whether the multi-task cells of a strategy comparison train on less once limited to the roles' abilities
    (``study.stages.base_recipe``): the roles enter their content only then, so a study whose data holds
    nothing outside the roles keeps its cell ids. Unknown (a source of many abilities): assumed so."""
    if not set(spec.factors.strategy) - {"multitask"}:
        return False
    roles = set(spec.roles.specialist) | set(spec.roles.general)
    if spec.abilities:
        return not set(spec.abilities) <= roles
    declared = {s.get("ability") and registry.canonical(s["ability"]) for s in spec.sources
                if s.get("split") in (None, "train")}
    return None in declared or not declared <= roles


def _excluded(levels: dict[str, Any], rules: list[dict[str, Any]]) -> bool:
    def match(v: Any, want: Any) -> bool:
        return v in want if isinstance(want, list) else v == want

    return any(all(match(levels.get(k), want) for k, want in rule.items()) for rule in rules)


def expand_cells(spec: StudySpec) -> list[Cell]:
    """Every distinct cell of the grid, in a stable order (model, then the other factors)."""
    f = spec.factors
    axes: dict[str, list[Any]] = {
        "model": f.model,
        "construction": list(f.construction),
        "composition": f.composition,
        "strategy": list(f.strategy),
        "replay_frac": f.replay_frac,
        "volume": f.volume or [None],
        "per_ability": f.per_ability or [None],
        "frac": f.frac or [None],
        "seed": f.seed,
    }
    roles_limit = _roles_limit_multitask(spec)
    cells: dict[str, Cell] = {}
    for combo in itertools.product(*axes.values()):
        levels = _normalise(dict(zip(axes, combo)), f.seed[0])
        if _excluded(levels, spec.exclude):
            continue
        model = spec.models[levels["model"]]
        composition = levels["composition"]
        content = {
            "study": spec.name,
            "levels": levels,
            "model": _model_content(model),
            "sources": spec.sources,
            "abilities": spec.abilities,
            "template": spec.template,
            "tokenizer": spec.tokenizer.model_dump(),
            "upsample": spec.upsample,
            "training": spec.training,
            "checkpoints": _checkpoints_content(spec.checkpoints),
            # a field added later is left out at its default, so the cells of existing stores keep their ids
            "evaluation": spec.evaluation.model_dump(exclude={"valid_loss_per_ability"} if
                                                     spec.evaluation.valid_loss_per_ability is None else None),
        }
        if levels["strategy"] != "multitask" or composition.startswith("ratio:") or \
                (composition.split(":")[0] in _ROLE_LIMITED and roles_limit):
            content["roles"] = spec.roles.model_dump()
        if composition.startswith("recipe:"):
            content["recipe"] = spec.recipes[composition.split(":", 1)[1]]
        if is_base(levels):  # nothing is trained, sampled or selected
            for k in ("upsample", "training", "checkpoints", "roles"):
                content.pop(k, None)
            content["evaluation"] = {k: v for k, v in content["evaluation"].items()
                                     if k not in ("select", "evaluate", "valid_loss_per_ability")}
        cid = content_hash(_identity(content))
        if cid not in cells:
            cells[cid] = Cell(cid, content, model.tier, spec.resources[model.tier], dict(model.engine))
    return list(cells.values())


def cells_by_tier(cells: list[Cell]) -> dict[str, list[Cell]]:
    """Cells grouped by resource tier (one Tuner per tier)."""
    out: dict[str, list[Cell]] = {}
    for c in cells:
        out.setdefault(c.tier, []).append(c)
    return out
