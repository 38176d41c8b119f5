"""From a cell's factor levels to the data recipe of each of its training stages: the one strategy table.

The cell's *base recipe* is what a multi-task run trains on (construction × composition × quantity); in a
study that compares strategies it draws from the roles' abilities only (``roles.specialist`` +
``roles.general``), as DMT's multi-task baseline mixes the specialist and general sets. ``TABLE`` maps each
SFT strategy (DMT paper §3.3/§4) to a function ``(base recipe, roles, levels) -> [(stage name, Recipe)]``; a
staged strategy splits the base recipe by role, each stage training on the rows of its abilities *in the base
recipe's sample* (``restrict``), so every strategy at a grid point trains on the same data and the comparison
is about order, not amount (DMT adds k × the specialist data to stage 2):

- ``multitask``: one stage, ``multitask``, on the base recipe;
- ``sequential``: ``seq-<ability>`` for each specialist ability in ``roles.order`` (default: as listed),
  then ``general``;
- ``mixed_sequential``: ``specialist`` (all specialist abilities), then ``general``;
- ``dmt``: ``specialist``, then ``general+replay-<k>``: general plus the specialist recipe scaled by the
  replay fraction k (``levels.replay_frac``), whose sample is nested inside stage 1's (sampling takes a
  prefix of a fixed per-ability order). Stage 1 does not depend on k, so DMT cells that differ only in k
  share its stage key and train it once. k = 0 is mixed-sequential.

Stage names go into Train run directory names and store rows: changing one orphans the stages that
existing stores have trained. ``STRATEGIES`` (the study file's allowed values) is built from the table,
so adding a strategy is one entry here.
"""
from __future__ import annotations

from typing import Any, Callable

from doitray.data.recipes import Part, Recipe

_CONSTRUCTION = {"curated": "curated", "synthetic": "synthetic", "mix": None}
QUANTITIES = ("volume", "per_ability", "frac")  # the data-quantity factors


def is_base(levels: dict[str, Any]) -> bool:
    """Whether a cell's levels are a base cell's: a data quantity of 0, the model scored without instruction
    tuning (``study.cells``)."""
    return any(levels.get(q) == 0 for q in QUANTITIES)


def base_recipe(content: dict[str, Any]) -> Recipe:
    """The recipe of a cell's data before any strategy splits it."""
    lv = content["levels"]
    construction = _CONSTRUCTION[lv["construction"]]
    abilities = content.get("abilities")
    upsample = bool(content.get("upsample"))
    comp, _, arg = lv["composition"].partition(":")
    exclude = (arg,) if comp == "loo" else ()
    if comp == "recipe":
        return Recipe.model_validate(content["recipe"])
    if comp == "reconstruct":
        return Recipe.doit_reconstruct()
    if comp == "maximum":
        return Recipe.doit_maximum()
    if comp == "ratio":
        roles = content["roles"]
        s, g = (float(x) for x in arg.split(":"))
        return Recipe(parts=(Part(name="specialist", abilities=tuple(roles["specialist"]), frac=s,
                                  construction=construction, upsample=upsample),
                             Part(name="general", abilities=tuple(roles["general"]), frac=g,
                                  construction=construction, upsample=upsample)),
                      name=f"ratio-{s:g}-{g:g}")
    if comp == "only":
        abilities = [arg]
    elif _has_roles(content):
        staged = list(dict.fromkeys(content["roles"]["specialist"] + content["roles"]["general"]))
        abilities = [a for a in staged if a in abilities] if abilities else staged
    common = dict(construction=construction, abilities=tuple(abilities) if abilities else None, exclude=exclude,
                  upsample=upsample)
    if comp == "all" or all(lv.get(q) is None for q in QUANTITIES):
        part = Part(name="all", all=True, **common)
    elif lv.get("volume") is not None:
        part = Part(name=f"balanced-{lv['volume']}", total=int(lv["volume"]), **common)
    elif lv.get("per_ability") is not None:
        part = Part(name=f"per-ability-{lv['per_ability']}", per_ability=int(lv["per_ability"]), **common)
    else:
        part = Part(name=f"frac-{lv['frac']:g}", frac=float(lv["frac"]), **common)
    return Recipe(parts=(part,), name=f"{comp}{'-' + arg if arg else ''}-{part.name}")


def _has_roles(content: dict[str, Any]) -> bool:
    roles = content.get("roles") or {}
    return bool(roles.get("specialist") and roles.get("general"))


# quantity rules whose count for one ability depends on which other abilities are selected
def _shared_rule(p: Part) -> bool:
    return p.total is not None or p.fill_total is not None


def restrict(recipe: Recipe, abilities: list[str], name: str) -> Recipe:
    """The rows of ``abilities`` in ``recipe``'s sample (parts that select none of them are dropped).

    A part whose per-ability counts are independent (``frac``, ``per_ability``, ``all``, caps alone) is narrowed to
    those abilities; one whose counts are shared out over its selection (``total``, ``fill_total``) keeps its
    selection and ``keep``s those abilities, so each gets the count it has in the whole sample."""
    keep = set(abilities)
    parts = []
    for p in recipe.parts:
        sel = tuple(a for a in (p.abilities if p.abilities is not None else abilities) if a in keep and a not in p.exclude)
        if not sel:
            continue
        if _shared_rule(p):
            parts.append(p.model_copy(update={"keep": tuple(a for a in sel if p.keep is None or a in p.keep)}))
            continue
        update: dict[str, Any] = {"abilities": sel}
        if p.caps:
            update["caps"] = {a: c for a, c in p.caps.items() if a in keep}
        parts.append(p.model_copy(update=update))
    if not parts:
        raise ValueError(f"stage {name!r}: the cell's recipe selects none of {sorted(keep)}")
    return Recipe(parts=tuple(parts), name=name)


Stages = list[tuple[str, Recipe]]


def _multitask(base: Recipe, roles: dict[str, Any], levels: dict[str, Any]) -> Stages:
    return [("multitask", base)]


def _sequential(base: Recipe, roles: dict[str, Any], levels: dict[str, Any]) -> Stages:
    order = roles.get("order") or list(roles["specialist"])
    return [(f"seq-{a}", restrict(base, [a], f"seq-{a}")) for a in order] + \
        [("general", restrict(base, list(roles["general"]), "general"))]


def _mixed_sequential(base: Recipe, roles: dict[str, Any], levels: dict[str, Any]) -> Stages:
    return [("specialist", restrict(base, list(roles["specialist"]), "specialist")),
            ("general", restrict(base, list(roles["general"]), "general"))]


def _dmt(base: Recipe, roles: dict[str, Any], levels: dict[str, Any]) -> Stages:
    stages = _mixed_sequential(base, roles, levels)
    k = float(levels["replay_frac"])
    if k == 0:  # no replay: mixed-sequential (the same stage names and recipes, so the same Train runs)
        return stages
    (s_name, specialist), (_, general) = stages
    return [(s_name, specialist), (f"general+replay-{k:g}", general.union(specialist.scaled(k)))]


# strategy -> (base recipe, roles, levels) -> the ordered [(stage name, Recipe)]
TABLE: dict[str, Callable[[Recipe, dict[str, Any], dict[str, Any]], Stages]] = {
    "multitask": _multitask,
    "sequential": _sequential,
    "mixed_sequential": _mixed_sequential,
    "dmt": _dmt,
}
STRATEGIES: tuple[str, ...] = tuple(TABLE)


def stage_recipes(content: dict[str, Any]) -> Stages:
    """The ordered (stage name, recipe) list of a cell's strategy (none for a base cell: a data quantity of 0)."""
    lv = content["levels"]
    if is_base(lv):
        return []
    strategy = lv["strategy"]
    if strategy not in TABLE:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    return TABLE[strategy](base_recipe(content), content.get("roles") or {}, lv)
