"""Visual conventions: one colour per model size, one dash per construction, readable axes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from doitray import abilities
from doitray.analysis.composition import k_label

# DoIT's plots: 7b green, 13b blue, 33b red; further sizes continue the palette (ordered by parameters).
MODEL_COLOURS = ("#2ca02c", "#1f77b4", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MODEL_MARKERS = ("triangle-up", "circle-open", "square", "diamond", "cross", "x", "star", "hexagon")
CONSTRUCTION_DASH = {"curated": "solid", "synthetic": "dash", "mix": "dot"}
OTHER_DASHES = ("dashdot", "longdash", "longdashdot")
CHANCE_COLOUR = "#888888"
X_TITLES = {"volume": "training examples (total, log scale)", "per_ability": "training examples per ability (log scale)",
            "frac": "fraction of each source used (log scale)"}


class Palette:
    """Colours per model (ordered by parameter count) and dashes per construction, fixed for a report."""

    def __init__(self, models: list[str], constructions: list[str]):
        self.models = models
        self.colour = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}
        self.marker = {m: MODEL_MARKERS[i % len(MODEL_MARKERS)] for i, m in enumerate(models)}
        extra = iter(OTHER_DASHES * 4)
        self.dash = {c: CONSTRUCTION_DASH.get(c) or next(extra) for c in constructions}

    def model_colour(self, model) -> str:
        return self.colour.get(str(model), "#444444")


def display_name(panel: str) -> str:
    """Registry display name of an ability panel, else the panel name."""
    if panel == "overall":
        return "Overall (average)"
    try:
        return abilities.get(panel).display
    except KeyError:
        return panel.replace("_", " ")


def order_panels(panels) -> list[str]:
    """Overall first, then abilities in registry order, then the rest (e.g. OOD subsets) by name."""
    order = {n: i for i, n in enumerate(["overall", *abilities.names()])}
    return sorted(dict.fromkeys(str(p) for p in panels), key=lambda p: (order.get(p, len(order)), p))


def value_scale(values, metric: str | None = None) -> tuple[float, str]:
    """(factor, unit) to display scores: fractions as %, other scales (e.g. a 1–10 judge) as they are."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    if len(v) and v.min() >= -0.05 and v.max() <= 1.0 + 1e-9 and metric != "judge":
        return 100.0, "score (%)"
    return 1.0, "score (1–10)" if metric == "judge" else "score (metric scale)"


def tick_text(x: float, axis: str) -> str:
    if axis == "frac":
        return k_label(x)
    if x >= 1000:
        return f"{x / 1000:g}k"
    return f"{x:g}"


def log_ticks(xs, axis: str) -> dict:
    levels = sorted({float(x) for x in xs if x is not None and not pd.isna(x) and x > 0})
    return {"type": "log", "tickvals": levels, "ticktext": [tick_text(x, axis) for x in levels]}


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{0.0 if abs(v) < 1e-9 else v:.{digits}g}"
    return str(v)
