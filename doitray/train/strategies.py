"""SFT strategies as ordered stages (DMT paper §3.3/§4): which data each stage trains on.

The data are opaque objects (the study passes its ``Recipe``s) combined with two callables it supplies:
``union(list_of_recipes) -> recipe`` and ``scale(recipe, k) -> recipe`` (k × the examples, for DMT's
replay of specialist data). This module never imports the data layer.

- ``multitask``: one stage on specialists ∪ general.
- ``sequential``: one stage per specialist source, in ``order``, then general.
- ``mixed_sequential``: specialists ∪ (one stage), then general.
- ``dmt``: specialists ∪, then general ∪ k × specialists (k ∈ {1, 1/4, 1/16, 1/64, 1/256} in the paper).

``run_strategy`` trains them in order, each stage starting from the previous stage's final HF export.
Two cells whose first stages have the same content (DMT with different k) get the same stage key, so
the first stage is trained once and reused (see ``doitray.train.stage``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

STRATEGIES = ("multitask", "sequential", "mixed_sequential", "dmt")
DMT_K = (1.0, 1 / 4, 1 / 16, 1 / 64, 1 / 256)


@dataclass(frozen=True)
class StagePlan:
    index: int
    name: str
    data: Any                   # the study's recipe object for this stage


def expand(strategy: str, *, specialists: dict[str, Any], general: Any, union: Callable[[list[Any]], Any],
           scale: Callable[[Any, float], Any] | None = None, order: Sequence[str] | None = None,
           k: float | None = None) -> list[StagePlan]:
    """The ordered stages of ``strategy``; ``specialists`` maps a source name (e.g. math, code) to its recipe."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown SFT strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if not specialists:
        raise ValueError("specialists must name at least one specialist source")
    names = list(order) if order is not None else sorted(specialists)
    unknown = [n for n in names if n not in specialists]
    if unknown or (strategy == "sequential" and sorted(names) != sorted(specialists)):
        raise ValueError(f"order {names} must be a permutation of the specialist sources {sorted(specialists)}")
    spec_all = union([specialists[n] for n in names])
    if strategy == "multitask":
        stages = [("multitask", union([specialists[n] for n in names] + [general]))]
    elif strategy == "sequential":
        stages = [(f"sequential-{n}", specialists[n]) for n in names] + [("sequential-general", general)]
    elif strategy == "mixed_sequential":
        stages = [("mixed-specialist", spec_all), ("mixed-general", general)]
    else:
        if k is None or not (0 < float(k) <= 1):
            raise ValueError(f"dmt needs k in (0, 1] (the paper uses {', '.join(f'{x:g}' for x in DMT_K)}), got {k}")
        if scale is None:
            raise ValueError("dmt needs scale(recipe, k)")
        stages = [("dmt-specialist", spec_all), (f"dmt-general-k{float(k):g}", union([general, scale(spec_all, float(k))]))]
    return [StagePlan(i, n, d) for i, (n, d) in enumerate(stages)]


def run_strategy(plans: Sequence[StagePlan], make_spec: Callable[[StagePlan, str | None], Any],
                 run: Callable[[Any], Any] | None = None) -> list[Any]:
    """Train ``plans`` in order. ``make_spec(plan, init_from)`` builds each ``StageSpec``; ``init_from``
    is the previous stage's final HF export (None for the first). Returns the ``StageResult``s."""
    if run is None:
        from doitray.train.stage import run_stage as run
    results: list[Any] = []
    init_from: str | None = None
    for plan in plans:
        res = run(make_spec(plan, init_from))
        if res.final_hf_path is None:
            raise RuntimeError(f"stage {plan.name} finished without a final export")
        results.append(res)
        init_from = res.final_hf_path
    return results
