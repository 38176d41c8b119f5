"""Hand-made results tables with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

VOLUMES = [10, 40, 160, 640, 2560, 10240]


def _row(**kw) -> dict:
    base = {"cell_id": None, "checkpoint": "ck", "suite": "doit", "split": "test", "metric": "choice",
            "n": 400, "chance": 0.25, "ci_low": None, "ci_high": None, "ood": False, "composition": "balanced",
            "strategy": "multitask", "replay_frac": 0.0, "construction": "curated", "seed": 0,
            "model": "m1", "model_params": 1_000_000, "stage": 1, "step": 10}
    base.update(kw)
    base.setdefault("panel", base.get("ability"))
    base.setdefault("ability", base["panel"])
    if base["cell_id"] is None:
        base["cell_id"] = f"{base['model']}-{base['construction']}-{base.get('volume')}-{base['composition']}-{base['seed']}"
    return base


@pytest.fixture
def make_tidy():
    """Build a tidy table from a function value(panel, model_params, volume, construction, seed)."""

    def build(value, panels=("math", "ethics"), models=(("m1", 1_000_000), ("m2", 4_000_000)),
              constructions=("curated",), volumes=VOLUMES, seeds=(0,), se=0.0, **extra) -> pd.DataFrame:
        rows = []
        for p in panels:
            for m, mp in models:
                for c in constructions:
                    for v in volumes:
                        for s in seeds:
                            val = value(p, mp, v, c, s)
                            ci = (val - 1.96 * se, val + 1.96 * se) if se else (None, None)
                            rows.append(_row(panel=p, model=m, model_params=mp, construction=c, volume=v, seed=s,
                                             value=val, ci_low=ci[0], ci_high=ci[1], **extra))
        return pd.DataFrame(rows)

    return build


@pytest.fixture
def row():
    return _row
