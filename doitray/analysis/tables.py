"""Read the results store and join it into one tidy table: one row per (cell, suite, ability).

Pure functions over pandas DataFrames; ``load_results`` is the only function touching storage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

FACTOR_COLUMNS = ("model", "model_params", "construction", "volume", "per_ability", "composition",
                  "strategy", "replay_frac", "seed", "tier")
SCORE_COLUMNS = ("cell_id", "checkpoint", "stage", "step", "epoch", "suite", "split", "ability", "metric",
                 "value", "n", "chance", "ci_low", "ci_high")


@dataclass
class Results:
    """The study tables as DataFrames (empty frames with their columns when nothing was written)."""

    cells: pd.DataFrame
    checkpoints: pd.DataFrame
    scores: pd.DataFrame
    train_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    study: dict | None = None

    @property
    def name(self) -> str:
        if self.study and self.study.get("name"):
            return str(self.study["name"])
        if len(self.cells) and "study" in self.cells and self.cells["study"].notna().any():
            return str(self.cells["study"].dropna().iloc[0])
        return "study"


def load_results(root: str, with_predictions: bool = True) -> Results:
    """Read every table of the results store at ``root`` (local path or ``s3://`` / ``gs://`` URI)."""
    from doitray.store import ResultsStore

    store = ResultsStore(root)
    return Results(
        cells=store.read("cells"), checkpoints=store.read("checkpoints"), scores=store.read("scores"),
        train_metrics=store.read("train_metrics"),
        predictions=store.read("predictions") if with_predictions else pd.DataFrame(),
        study=store.read_json("study.json"),
    )


def is_ood(ability: str, suite: str | None) -> bool:
    """Out-of-domain: a C-Eval subset (``ceval_*``) or any ability from a suite whose name has 'ood'."""
    return str(ability).startswith("ceval_") or "ood" in str(suite or "").lower()


def _expand_factors(cells: pd.DataFrame) -> pd.DataFrame:
    """Add factor levels found only in the ``factors`` JSON (e.g. ``frac``) as columns."""
    if "factors" not in cells or cells.empty:
        return cells
    parsed = []
    for s in cells["factors"]:
        try:
            d = json.loads(s) if isinstance(s, str) and s else {}
        except json.JSONDecodeError:
            d = {}
        parsed.append({k: v for k, v in d.items() if not isinstance(v, (dict, list))})
    extra = pd.DataFrame(parsed, index=cells.index)
    extra = extra[[c for c in extra.columns if c not in cells.columns]]
    return pd.concat([cells, extra], axis=1) if len(extra.columns) else cells


def cell_label(row: Any) -> str:
    """A short human label of a cell's factor levels (for hover text and tables)."""
    cons = row.get("construction")
    parts = [str(row.get("model", "?")), "" if cons is None or pd.isna(cons) else str(cons)]
    vol = row.get("volume")
    if vol is not None and not pd.isna(vol):
        parts.append("base N=0" if vol == 0 else f"N={int(vol)}")
    for key in ("composition", "strategy"):
        v = row.get(key)
        if v and not pd.isna(v) and v not in ("balanced", "multitask"):
            parts.append(str(v))
    k = row.get("replay_frac")
    if k is not None and not pd.isna(k) and k > 0:
        parts.append(f"k={k:g}")
    seed = row.get("seed")
    if seed is not None and not pd.isna(seed):
        parts.append(f"seed {int(seed)}")
    return " ".join(p for p in parts if p)


def _pick_checkpoints(scores: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the selected checkpoint when it has scores, else the last scored one."""
    scored = scores[["cell_id", "checkpoint", "stage", "step"]].drop_duplicates(["cell_id", "checkpoint"])
    sel = checkpoints.loc[checkpoints.get("selected", pd.Series(dtype=bool)).fillna(False).astype(bool),
                          ["cell_id", "checkpoint"]] if len(checkpoints) else pd.DataFrame(
        columns=["cell_id", "checkpoint"])
    chosen = scored.merge(sel, on=["cell_id", "checkpoint"])
    chosen["checkpoint_rule"] = "selected"
    rest = scored[~scored["cell_id"].isin(chosen["cell_id"])]
    last = (rest.sort_values(["cell_id", "stage", "step"], na_position="first")
            .groupby("cell_id", sort=False).tail(1).copy())
    last["checkpoint_rule"] = "last"
    return pd.concat([chosen, last], ignore_index=True)[["cell_id", "checkpoint", "checkpoint_rule"]]


def _without_benchmark_panels(scores: pd.DataFrame, study: dict | None) -> pd.DataFrame:
    """Scores without what only the benchmark panels draw (``report.figures_benchmarks``): every row of a suite
    grouped by the benchmark's subjects (CMMLU, C-Eval, AGIEval, C3, LogiQA) and the ``overall`` row of any
    benchmark suite; a benchmark grouped by ability (GSM8K, HumanEval, MBPP, MT-Bench) feeds its ability's panel."""
    from doitray.eval.benchmarks import SUBJECT_KINDS, benchmark_names

    bench = benchmark_names(study)
    if not bench or scores.empty:
        return scores
    subject = [n for n, k in bench.items() if k in SUBJECT_KINDS]
    drop = scores["suite"].isin(subject) | (scores["suite"].isin(list(bench)) & (scores["ability"] == "overall"))
    return scores[~drop]


def tidy(results: Results, split: str = "test") -> pd.DataFrame:
    """One row per (cell, suite, ability): the reported score joined with the cell's factor levels.

    The score is read on ``split`` (falling back, per cell, to any split it has, noted in ``split``) at
    the selected checkpoint (falling back to the last one; ``checkpoint_rule`` says which).
    """
    scores = results.scores
    if scores.empty:
        return _empty_tidy(results.cells)
    scores = _without_benchmark_panels(scores, results.study)
    s = scores[scores["split"] == split]
    missing = set(scores["cell_id"]) - set(s["cell_id"])
    if missing:  # cells evaluated only on another split
        s = pd.concat([s, scores[scores["cell_id"].isin(missing)]], ignore_index=True)
    picks = _pick_checkpoints(s, results.checkpoints)
    s = s.merge(picks, on=["cell_id", "checkpoint"])
    cells = _expand_factors(results.cells.drop(columns=["study"], errors="ignore"))
    keep = [c for c in cells.columns if c not in ("recipe", "error", "attempts", "started_at",
                                                   "finished_at", "updated_at")]
    out = s.merge(cells[keep], on="cell_id", how="left")
    out["ood"] = [is_ood(a, su) for a, su in zip(out["ability"], out["suite"])]
    # One panel name per ability; an 'overall' row of an OOD suite is its own panel.
    out["panel"] = [f"{su}:overall" if (a == "overall" and o) else a
                    for a, su, o in zip(out["ability"], out["suite"], out["ood"])]
    out = out.drop_duplicates(["cell_id", "panel"])
    out["label"] = [cell_label(r) for r in out.to_dict("records")]
    for col in ("volume", "per_ability", "model_params", "replay_frac"):
        if col in out:
            out[col] = pd.to_numeric(out[col], errors="coerce")
    return out.reset_index(drop=True)


def _empty_tidy(cells: pd.DataFrame) -> pd.DataFrame:
    cols = list(SCORE_COLUMNS) + ["checkpoint_rule", "ood", "panel", "label"] + [
        c for c in cells.columns if c not in SCORE_COLUMNS]
    return pd.DataFrame(columns=cols)


def all_checkpoints(results: Results) -> pd.DataFrame:
    """Scores of every evaluated checkpoint (both splits), joined with the cell's factor levels."""
    if results.scores.empty:
        return _empty_tidy(results.cells)
    cells = _expand_factors(results.cells.drop(columns=["study"], errors="ignore"))
    keep = [c for c in cells.columns if c in FACTOR_COLUMNS or c in ("cell_id", "state", "frac")]
    out = results.scores.merge(cells[keep], on="cell_id", how="left")
    if len(results.checkpoints):
        sel = results.checkpoints[["cell_id", "checkpoint", "selected"]].drop_duplicates(["cell_id", "checkpoint"])
        out = out.merge(sel, on=["cell_id", "checkpoint"], how="left")
    else:
        out["selected"] = False
    out["selected"] = out["selected"].fillna(False).astype(bool)
    out["ood"] = [is_ood(a, su) for a, su in zip(out["ability"], out["suite"])]
    return out


def completion(cells: pd.DataFrame, scored_cells: set[str] | None = None) -> dict:
    """Cell counts by state, the fraction done, and the cells still missing (not done, or done unscored)."""
    total = int(len(cells))
    by_state = {str(k): int(v) for k, v in cells["state"].value_counts().items()} if total else {}
    missing = []
    for r in cells.to_dict("records"):
        state = r.get("state")
        if state == "done" and scored_cells is not None and r["cell_id"] not in scored_cells:
            state = "done, no scores"
        elif state == "done":
            continue
        missing.append({"cell_id": r["cell_id"], "state": state, "label": cell_label(r),
                        "error": r.get("error")})
    done = total - len(missing)
    return {"total": total, "done": done, "by_state": by_state,
            "fraction": (done / total) if total else 0.0, "missing": missing,
            "partial": bool(missing) or total == 0}


def model_order(df: pd.DataFrame) -> list[str]:
    """Model names ordered by parameter count (then name)."""
    if df.empty or "model" not in df:
        return []
    m = df[["model", "model_params"]].drop_duplicates("model").copy()
    m["model_params"] = pd.to_numeric(m["model_params"], errors="coerce").fillna(np.inf)
    return m.sort_values(["model_params", "model"])["model"].astype(str).tolist()


def ability_panels(df: pd.DataFrame, ood: bool | None = False) -> list[str]:
    """Panel names in registry order ('overall' first), optionally only in-domain or only OOD."""
    from doitray import abilities

    if df.empty:
        return []
    sub = df if ood is None else df[df["ood"] == ood]
    panels = list(dict.fromkeys(sub["panel"].astype(str)))
    order = {n: i for i, n in enumerate(["overall", *abilities.names()])}
    return sorted(panels, key=lambda p: (order.get(p, len(order)), p))
