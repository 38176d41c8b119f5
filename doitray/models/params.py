"""Parameter counts of a study's model levels: from a preset, a local ``config.json`` or a known GGUF."""
from __future__ import annotations

import json
import os

from doitray.models.presets import get_preset, param_counts


def model_params(level: dict) -> int | None:
    """Parameter count of a model level: from its preset, else from a local config.json."""
    if level.get("preset"):
        try:
            return param_counts(get_preset(level["preset"]))["total"]
        except ValueError:
            pass
    path = level.get("path")
    if path and os.path.isfile(os.path.join(path, "config.json")):
        cfg = json.load(open(os.path.join(path, "config.json")))
        h, layers, inter, vocab = (cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                        "vocab_size"))
        if all((h, layers, inter, vocab)):
            return int(2 * vocab * h + layers * (4 * h * h + 3 * h * inter + 2 * h) + h)
    if level.get("gguf") == "smollm2":
        return param_counts(get_preset("smollm2-135m"))["total"]
    return None
