"""From a cell's factor levels to the data recipe of each of its training stages.

The cell's *base recipe* is what a multi-task run trains on (construction × composition × quantity).
A staged strategy splits it by role (``roles.specialist`` / ``roles.general``): each stage trains on
the base recipe restricted to that stage's abilities, and DMT's second stage adds the specialist
recipe scaled by the replay fraction k, which is nested inside stage 1's sample.
"""
from __future__ import annotations

from typing import Any

from doitray.data.recipes import Part, Recipe

_CONSTRUCTION = {"curated": "curated", "synthetic": "synthetic", "mix": None}


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
    common = dict(construction=construction, abilities=tuple(abilities) if abilities else None, exclude=exclude,
                  upsample=upsample)
    if comp == "all" or all(lv.get(q) is None for q in ("volume", "per_ability", "frac")):
        part = Part(name="all", all=True, **common)
    elif lv.get("volume") is not None:
        part = Part(name=f"balanced-{lv['volume']}", total=int(lv["volume"]), **common)
    elif lv.get("per_ability") is not None:
        part = Part(name=f"per-ability-{lv['per_ability']}", per_ability=int(lv["per_ability"]), **common)
    else:
        part = Part(name=f"frac-{lv['frac']:g}", frac=float(lv["frac"]), **common)
    return Recipe(parts=(part,), name=f"{comp}{'-' + arg if arg else ''}-{part.name}")


def restrict(recipe: Recipe, abilities: list[str], name: str) -> Recipe:
    """``recipe`` limited to ``abilities`` (parts that select none of them are dropped)."""
    keep = set(abilities)
    parts = []
    for p in recipe.parts:
        sel = tuple(a for a in (p.abilities if p.abilities is not None else abilities) if a in keep and a not in p.exclude)
        if not sel:
            continue
        update: dict[str, Any] = {"abilities": sel}
        if p.caps:
            update["caps"] = {a: c for a, c in p.caps.items() if a in keep}
        parts.append(p.model_copy(update=update))
    if not parts:
        raise ValueError(f"stage {name!r}: the cell's recipe selects none of {sorted(keep)}")
    return Recipe(parts=tuple(parts), name=name)


def stage_recipes(content: dict[str, Any]) -> list[tuple[str, Recipe]]:
    """The ordered (stage name, recipe) list of a cell's strategy."""
    lv = content["levels"]
    base = base_recipe(content)
    strategy = lv["strategy"]
    if strategy == "multitask":
        return [("multitask", base)]
    roles = content["roles"]
    spec, gen = list(roles["specialist"]), list(roles["general"])
    if strategy == "sequential":
        order = roles.get("order") or spec
        return [(f"seq-{a}", restrict(base, [a], f"seq-{a}")) for a in order] + [("general", restrict(base, gen, "general"))]
    specialist = restrict(base, spec, "specialist")
    general = restrict(base, gen, "general")
    if strategy == "mixed_sequential" or (strategy == "dmt" and lv["replay_frac"] == 0):
        return [("specialist", specialist), ("general", general)]
    if strategy == "dmt":
        k = float(lv["replay_frac"])
        return [("specialist", specialist), (f"general+replay-{k:g}", general.union(specialist.scaled(k)))]
    raise ValueError(f"unknown strategy {strategy!r}")
