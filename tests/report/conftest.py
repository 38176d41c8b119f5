"""A realistic hand-made study store (written through ``ResultsStore.write``), complete and partial.

Set ``DOITRAY_REPORT_STORE=/path/to/study`` to run the report tests on a real run's store instead.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from doitray.abilities import DOIT_ABILITIES, get
from doitray.store import ResultsStore

MODELS = (("tiny-s", 5_000_000), ("tiny-m", 20_000_000))
CONSTRUCTIONS = ("curated", "synthetic")
VOLUMES = (40, 160, 640, 2560)
OOD = ("ceval_law", "ceval_physics", "ceval_history")
N_ITEMS = 60
# planted: per-ability data slope (gain of chance-normalised score per doubling) and saturation volume
SLOPE = dict(zip(DOIT_ABILITIES, (0.06, 0.05, 0.07, 0.03, 0.04, 0.05, 0.01, 0.04, 0.02, 0.005)))
SATURATE = {"ethics": 160, "role_play": 160}


def _true_score(ability: str, params: int, volume: float, construction: str, epoch: int) -> float:
    chance = get(ability).chance if not ability.startswith("ceval_") else 0.25
    v = min(volume, SATURATE.get(ability, 1e9))
    gain = SLOPE.get(ability, 0.03) * math.log2(max(v, 1) / 10 + 1) + 0.04 * math.log2(params / 5e6)
    gain *= 0.7 if construction == "synthetic" else 1.0
    gain *= 0.9 if epoch == 1 else 1.0
    return min(0.97, chance + (1 - chance) * min(gain, 0.9))


def _cell(cid, model, params, construction, volume, composition="balanced", state="done"):
    factors = {"model": model, "construction": construction, "volume": volume, "composition": composition, "seed": 0}
    return {"cell_id": cid, "study": "report_fixture", "state": state, "attempts": 1 if state != "pending" else 0,
            "tier": "cpu", "model": model, "model_params": params, "construction": construction, "volume": volume,
            "per_ability": volume / len(DOIT_ABILITIES), "composition": composition, "strategy": "multitask",
            "replay_frac": 0.0, "seed": 0, "factors": json.dumps(factors)}


def write_fixture_store(root: Path, partial: bool = False, seed: int = 0) -> Path:
    """Write the hand-made study; with ``partial`` some cells are pending/failed and have no results."""
    rng = np.random.default_rng(seed)
    store = ResultsStore(str(root))
    store.write_json("study.json", {"name": "report_fixture" + ("_partial" if partial else ""),
                                    "factors": {"model": [m for m, _ in MODELS], "volume": list(VOLUMES)}})
    cells = []
    for model, params in MODELS:
        cells.append(_cell(f"{model}-base", model, params, None, 0))  # a base cell (study.cells.is_base)
        for cons in CONSTRUCTIONS:
            for vol in VOLUMES:
                cells.append(_cell(f"{model}-{cons}-{vol}", model, params, cons, vol))
    cells.append(_cell("tiny-m-reconstruct", "tiny-m", 20_000_000, "curated", 2560, "reconstruct"))
    for ab in DOIT_ABILITIES:
        cells.append(_cell(f"tiny-m-loo-{ab}", "tiny-m", 20_000_000, "curated", 2560, f"loo:{ab}"))
    if partial:
        for c in cells:
            if c["model"] == "tiny-m" and c["volume"] == 2560 and c["composition"] == "balanced":
                c["state"] = "pending"
            if c["cell_id"] == "tiny-s-synthetic-640":
                c.update(state="failed", error="RuntimeError: out of memory")
    for c in cells:
        store.write("cells", c["cell_id"], [c])
        if c["state"] != "done":
            continue
        loo = c["composition"].startswith("loo:")
        left = c["composition"].split(":", 1)[1] if loo else None
        ckpts, scores = [], []
        epochs = (0,) if c["volume"] == 0 else (1, 2)
        valid_avg = {}
        for ep in epochs:
            ck = f"epoch_{ep}"
            for split in ("valid", "test"):
                vals = []
                for suite, names in (("doit", DOIT_ABILITIES), ("ceval_ood", OOD)):
                    for ab in names:
                        p = _true_score(ab, c["model_params"], c["volume"], c["construction"], ep)
                        if loo and ab == left:  # without its own data: most of its gain is lost
                            chance = get(ab).chance
                            p = chance + 0.4 * (p - chance)
                        value = rng.binomial(N_ITEMS, p) / N_ITEMS
                        se = math.sqrt(max(value * (1 - value), 1e-4) / N_ITEMS)
                        chance = get(ab).chance if suite == "doit" else 0.25
                        metric = get(ab).metric if suite == "doit" else "choice"
                        scores.append({"cell_id": c["cell_id"], "checkpoint": ck, "stage": 1, "step": ep * 10,
                                       "epoch": float(ep), "suite": suite, "split": split, "ability": ab,
                                       "metric": metric, "value": value, "n": N_ITEMS, "chance": chance,
                                       "ci_low": max(0.0, value - 1.96 * se), "ci_high": min(1.0, value + 1.96 * se)})
                        if suite == "doit":
                            vals.append(value)
                    if suite == "doit":
                        scores.append({"cell_id": c["cell_id"], "checkpoint": ck, "stage": 1, "step": ep * 10,
                                       "epoch": float(ep), "suite": suite, "split": split, "ability": "overall",
                                       "metric": "mean", "value": float(np.mean(vals)), "n": N_ITEMS * len(vals),
                                       "chance": float(np.mean([get(a).chance for a in DOIT_ABILITIES]))})
                if split == "valid":
                    valid_avg[ck] = float(np.mean(vals))
            ckpts.append({"cell_id": c["cell_id"], "checkpoint": ck, "stage": 1, "stage_name": "sft", "step": ep * 10,
                          "epoch": float(ep), "path": f"/ckpt/{c['cell_id']}/{ck}", "valid_loss": 2.0 - ep * 0.1})
        best = max(valid_avg, key=valid_avg.get)
        for ck in ckpts:
            ck["selected"] = ck["checkpoint"] == best
        store.write("checkpoints", c["cell_id"], ckpts)
        store.write("scores", c["cell_id"], scores)
    return root


@pytest.fixture(scope="session")
def study_store(tmp_path_factory) -> Path:
    """The complete study store (or ``$DOITRAY_REPORT_STORE`` when set)."""
    real = os.environ.get("DOITRAY_REPORT_STORE")
    if real:
        return Path(real)
    return write_fixture_store(tmp_path_factory.mktemp("study_full"))


@pytest.fixture(scope="session")
def partial_store(tmp_path_factory) -> Path:
    return write_fixture_store(tmp_path_factory.mktemp("study_partial"), partial=True)


@pytest.fixture(scope="session")
def dmt_paper_store(tmp_path_factory) -> Path:
    from doitray.analysis.reference import write_k_sweep_store

    root = tmp_path_factory.mktemp("dmt_paper")
    write_k_sweep_store(str(root))
    return root
