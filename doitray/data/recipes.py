"""Recipes: what a cell trains on, as a pure, hashable value (a list of parts).

A ``Part`` selects rows of the pool (split, abilities or all minus ``exclude``, construction, source
names) and says how many to take per ability with exactly one quantity rule:

- ``total``: a volume balanced across the selected abilities (DoIT curated-N: N/10 each; the remainder
  of N/k goes one each to the first abilities in registry order, so counts grow monotonically with N);
- ``per_ability``: a count for every ability, or a map ability -> count;
- ``frac``: a fraction of each ability's available rows (DMT 1, 1/4, …, 1/256), rounded half up;
- ``all``: every row;
- ``caps`` (+ optional ``fill_total``, ``remainder_to``): capped abilities get their cap; without
  ``fill_total`` the others get all their rows (DoIT "maximum"); with it, the others share
  ``fill_total - sum(caps)`` uniformly, an ability with fewer rows than its share gives the rest to
  the others (water-filling), and the last integer remainder goes to ``remainder_to`` (DoIT
  "reconstruct": ethics 64, role_play 64, creative_writing 1000, the rest filled to 10,000).

``scale`` multiplies a part's quantity (DMT's replay fraction k); because sampling takes a prefix of a
fixed per-ability order, the scaled sample is nested inside the unscaled one. ``keep`` takes only some of
the selected abilities at the quotas the whole selection gets (a staged strategy's stage: the rows of its
abilities in the multi-task sample, so the stages of a strategy together train on that sample). Asking for
more rows than available is an error unless ``upsample`` is set.
"""
from __future__ import annotations

import hashlib
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from doitray import abilities as registry

Construction = Literal["curated", "synthetic"]


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


class Part(BaseModel):
    """One selection of the pool with one quantity rule (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    split: Literal["train", "valid", "test"] = "train"
    abilities: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    construction: Construction | None = None
    sources: tuple[str, ...] | None = None
    total: int | None = Field(None, ge=0)
    per_ability: int | dict[str, int] | None = None
    frac: float | None = Field(None, ge=0.0)
    all: bool = False
    caps: dict[str, int] | None = None
    fill_total: int | None = Field(None, ge=0)
    remainder_to: str | None = None
    scale: float = Field(1.0, ge=0.0)
    upsample: bool = False
    keep: tuple[str, ...] | None = None  # None: every selected ability

    @model_validator(mode="after")
    def _one_rule(self) -> "Part":
        rules = [r for r in ("total", "per_ability", "frac", "caps") if getattr(self, r) is not None]
        rules += ["all"] if self.all else []
        if len(rules) != 1:
            raise ValueError("a recipe part needs exactly one quantity rule among total, per_ability, frac, all, caps; "
                             f"got {rules or 'none'}")
        if self.fill_total is not None and self.caps is None:
            raise ValueError("fill_total is only allowed together with caps")
        for name in (self.abilities or ()) + self.exclude + (self.keep or ()) + tuple(self.caps or ()) + \
                (tuple(self.per_ability) if isinstance(self.per_ability, dict) else ()):
            if not registry.is_known(name):
                raise ValueError(f"unknown ability {name!r} in recipe part; known: {', '.join(registry.names())}")
        return self

    def selected(self, available: dict[str, int]) -> list[str]:
        """The abilities this part draws from, in registry order (``available``: ability -> rows)."""
        names = self.abilities if self.abilities is not None else tuple(available)
        if isinstance(self.per_ability, dict) and self.abilities is None:
            names = tuple(self.per_ability)
        order = {n: i for i, n in enumerate(registry.names())}
        return sorted((a for a in dict.fromkeys(names) if a not in self.exclude), key=lambda a: (order.get(a, 1 << 30), a))

    def quotas(self, available: dict[str, int]) -> dict[str, int]:
        """Rows to take per ability given the rows ``available`` per ability; raises when short."""
        sel = self.selected(available)
        avail = {a: available.get(a, 0) for a in sel}
        if self.total is not None:
            k = len(sel)
            if k == 0:
                raise ValueError(f"recipe part {self.name!r}: no abilities selected")
            q = {a: self.total // k + (1 if i < self.total % k else 0) for i, a in enumerate(sel)}
        elif self.per_ability is not None:
            q = {a: (self.per_ability.get(a, 0) if isinstance(self.per_ability, dict) else self.per_ability) for a in sel}
        elif self.frac is not None:
            q = {a: _round(self.frac * avail[a]) for a in sel}
        elif self.all:
            q = dict(avail)
        else:
            q = self._caps_fill(sel, avail)
        if self.scale != 1.0:
            q = {a: _round(n * self.scale) for a, n in q.items()}
        if self.keep is not None:
            q = {a: n for a, n in q.items() if a in self.keep}
        if not self.upsample:
            short = {a: (n, avail[a]) for a, n in q.items() if n > avail[a]}
            if short:
                detail = ", ".join(f"{a}: asked {n}, available {m}" for a, (n, m) in short.items())
                raise ValueError(f"recipe part {self.name!r} asks for more rows than the pool holds ({detail}); "
                                 "set upsample=True to repeat rows")
        return q

    def _caps_fill(self, sel: list[str], avail: dict[str, int]) -> dict[str, int]:
        caps = self.caps or {}
        q = {a: caps[a] for a in sel if a in caps}
        others = [a for a in sel if a not in caps]
        if self.fill_total is None:
            q.update({a: avail[a] for a in others})
            return q
        budget = self.fill_total - sum(q.values())
        if budget < 0:
            raise ValueError(f"recipe part {self.name!r}: caps sum to {sum(q.values())} > fill_total {self.fill_total}")
        fill = {a: 0 for a in others}
        open_ = list(others)
        while open_ and budget > 0:  # water-filling: small abilities give all they have, the rest share
            share = budget // len(open_)
            small = [a for a in open_ if avail[a] - fill[a] <= share] if not self.upsample else []
            if small:
                for a in small:
                    budget -= avail[a] - fill[a]
                    fill[a] = avail[a]
                    open_.remove(a)
                continue
            for a in open_:
                fill[a] += share
            budget -= share * len(open_)
            if budget:
                target = self.remainder_to if self.remainder_to in open_ else None
                for a in ([target] if target else open_[:budget]):
                    fill[a] += budget if target else 1
                budget = 0
        if budget > 0:
            raise ValueError(f"recipe part {self.name!r}: the pool holds {sum(avail[a] for a in others)} rows for "
                             f"{others}, short of the {self.fill_total - sum(q.values())} needed to fill to "
                             f"{self.fill_total}; set upsample=True to repeat rows")
        q.update(fill)
        return q


class Recipe(BaseModel):
    """What a cell trains on: the union of its parts (which must select disjoint rows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: tuple[Part, ...]
    name: str = ""

    def key(self) -> str:
        """Content hash (the name is a label and does not change it; an unset ``keep`` is left out, so the keys of
        recipes from before it existed are unchanged)."""
        unset = {i: {"keep"} for i, p in enumerate(self.parts) if p.keep is None}
        body = self.model_copy(update={"name": ""}).model_dump_json(exclude={"parts": unset} if unset else None)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def union(self, *others: "Recipe", name: str = "") -> "Recipe":
        return Recipe(parts=self.parts + tuple(p for o in others for p in o.parts), name=name or self.name)

    def scaled(self, k: float) -> "Recipe":
        """Every part's quantity times ``k`` (DMT replay); nested inside this recipe's sample."""
        return Recipe(parts=tuple(p.model_copy(update={"scale": p.scale * k}) for p in self.parts),
                      name=f"{self.name}*{k:g}" if self.name else "")

    # --- named constructors for the studies -------------------------------------------------------------
    @classmethod
    def balanced(cls, total: int, *, construction: Construction | None = "curated",
                 abilities: list[str] | None = None, exclude: list[str] | None = None, upsample: bool = False) -> "Recipe":
        """DoIT curated-N / synthetic-N: ``total`` rows split evenly across the abilities."""
        return cls(parts=(Part(name=f"balanced-{total}", total=total, construction=construction, upsample=upsample,
                               abilities=tuple(abilities) if abilities else None, exclude=tuple(exclude or ())),),
                   name=f"{construction or 'all'}-{total}")

    @classmethod
    def per_ability_count(cls, n: int | dict[str, int], *, construction: Construction | None = "curated",
                          abilities: list[str] | None = None, exclude: list[str] | None = None) -> "Recipe":
        return cls(parts=(Part(name="per-ability", per_ability=n, construction=construction,
                               abilities=tuple(abilities) if abilities else None, exclude=tuple(exclude or ())),))

    @classmethod
    def leave_one_out(cls, ability: str, n_per_ability: int, *, construction: Construction | None = "curated",
                      abilities: list[str] | None = None) -> "Recipe":
        """``n_per_ability`` rows of every ability except ``ability`` (for transfer measurements)."""
        r = cls.per_ability_count(n_per_ability, construction=construction, abilities=abilities, exclude=[ability])
        return r.model_copy(update={"name": f"loo-{ability}-{n_per_ability}"})

    @classmethod
    def doit_reconstruct(cls, total: int = 10_000, caps: dict[str, int] | None = None,
                         remainder_to: str = "chinese") -> "Recipe":
        """DoIT "reconstruct": ethics 64, role_play 64, creative_writing 1000, others filled uniformly to 10,000."""
        caps = caps or {"ethics": 64, "role_play": 64, "creative_writing": 1000}
        return cls(parts=(Part(name="reconstruct", caps=caps, fill_total=total, remainder_to=remainder_to,
                               construction="curated", abilities=registry.DOIT_ABILITIES),), name="reconstruct")

    @classmethod
    def doit_maximum(cls, caps: dict[str, int] | None = None) -> "Recipe":
        """DoIT "maximum": the caps of reconstruct, every other ability all of its training data."""
        caps = caps or {"ethics": 64, "role_play": 64, "creative_writing": 1000}
        return cls(parts=(Part(name="maximum", caps=caps, construction="curated", abilities=registry.DOIT_ABILITIES),),
                   name="maximum")

    @classmethod
    def fractions(cls, frac: float, *, sources: list[str] | None = None, abilities: list[str] | None = None,
                  construction: Construction | None = None) -> "Recipe":
        """DMT data amount: ``frac`` of every selected ability's rows."""
        return cls(parts=(Part(name=f"frac-{frac:g}", frac=frac, construction=construction,
                               sources=tuple(sources) if sources else None,
                               abilities=tuple(abilities) if abilities else None),), name=f"frac-{frac:g}")

    @classmethod
    def ratio(cls, specialist: list[str] | str, general: list[str] | str, *, fixed: Literal["specialist", "general"],
              k: float, fixed_frac: float = 1.0) -> "Recipe":
        """DMT composition: the ``fixed`` side at ``fixed_frac`` of its data, the other side at fraction ``k``."""
        spec = (specialist,) if isinstance(specialist, str) else tuple(specialist)
        gen = (general,) if isinstance(general, str) else tuple(general)
        fs, fg = (fixed_frac, k) if fixed == "specialist" else (k, fixed_frac)
        return cls(parts=(Part(name="specialist", abilities=spec, frac=fs), Part(name="general", abilities=gen, frac=fg)),
                   name=f"ratio-{fixed}-fixed-{k:g}")
