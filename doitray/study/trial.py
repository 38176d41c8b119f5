"""One cell as a Ray Tune trial: data → stages (TorchTrainer + FSDP2) → evaluation → results store.

Every step is idempotent and keyed by content, so an interrupted cell resumes instead of restarting:
mixtures and packed data are cached by key, each stage's Train run is named by its stage key (Train V2
resumes it from its latest checkpoint; a completed stage returns its recorded result), and a
(checkpoint, suite) already scored is skipped.
"""
from __future__ import annotations

import json
import time
import traceback
from typing import Any

from doitray.study.cells import Cell
from doitray.study.store import ResultsStore


def cell_row(cell: Cell | dict, *, state: str, attempts: int, now: float, **extra: Any) -> dict:
    """The ``cells`` table row for a cell (factor levels as columns, everything as JSON too)."""
    content = cell.content if isinstance(cell, Cell) else cell["content"]
    cid = cell.cell_id if isinstance(cell, Cell) else cell["cell_id"]
    tier = cell.tier if isinstance(cell, Cell) else cell["tier"]
    lv = content["levels"]
    row = {
        "cell_id": cid, "study": content["study"], "state": state, "attempts": attempts, "tier": tier,
        "model": lv["model"], "construction": lv["construction"], "composition": lv["composition"],
        "volume": lv.get("volume"), "per_ability": lv.get("per_ability"), "strategy": lv["strategy"],
        "replay_frac": lv["replay_frac"], "seed": lv["seed"], "factors": json.dumps(lv, sort_keys=True),
        "recipe": json.dumps(content.get("recipe")), "updated_at": now,
    }
    row.update(extra)
    return row


def _latest(store: ResultsStore, cell_id: str) -> dict:
    df = store.read("cells")
    rows = df[df["cell_id"] == cell_id].to_dict("records")
    return rows[0] if rows else {}


def run_cell(config: dict) -> None:
    """The Tune trial function: runs one cell, recording its state in the store."""
    from ray import tune

    cell = config["cell"]
    store = ResultsStore(cell["store"])
    prev = _latest(store, cell["cell_id"])
    attempts = int(prev.get("attempts") or 0) + 1
    started = time.time()
    keep = {k: prev.get(k) for k in ("model_params", "train_tokens") if prev.get(k) is not None}
    store.write("cells", cell["cell_id"], [cell_row(cell, state="running", attempts=attempts, now=started,
                                                    started_at=started, **keep)])
    try:
        summary = execute_cell(cell, store)
    except BaseException as e:
        err = "".join(traceback.format_exception_only(type(e), e)).strip()
        tb = traceback.format_exc(limit=8)
        store.write("cells", cell["cell_id"], [cell_row(cell, state="failed", attempts=attempts, now=time.time(),
                                                        started_at=started, error=f"{err}\n{tb}"[-4000:], **keep)])
        raise
    now = time.time()
    store.write("cells", cell["cell_id"], [cell_row(cell, state="done", attempts=attempts, now=now, started_at=started,
                                                    finished_at=now, **summary)])
    tune.report({"done": 1.0, "wall_s": now - started, **{k: float(v) for k, v in summary.items()
                                                           if isinstance(v, (int, float))}})


def execute_cell(cell: dict, store: ResultsStore) -> dict:
    """Train every stage of the cell, then evaluate its checkpoints; returns summary columns."""
    from doitray.study.execution import CellRun

    return CellRun(cell, store).run()

