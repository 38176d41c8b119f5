"""A pretrain level becomes a pretrained base once per study (``study.pretrain``) and is reused after that."""
from __future__ import annotations

import json
import os
import re

import pytest

from doitray.store import ResultsStore
from doitray.study.spec import parse_study
from studykit import tiny_study

pytestmark = pytest.mark.slow

PRETRAIN = {"tokens": 6_000, "lr": 3e-3, "seq_len": 64, "global_batch": 8, "micro_batch": 8}


def _spec(storage, **pretrain):
    doc = tiny_study(storage)
    doc["models"] = {"xs": {"preset": "tiny-xs", "init": {"pretrain": {**PRETRAIN, **pretrain}}},
                     "xs0": {"preset": "tiny-xs", "init": "scratch"}}
    doc["factors"]["model"] = ["xs", "xs0"]
    return parse_study(doc)


def test_a_base_is_pretrained_once_and_reused(tmp_path, ray_local, capsys):
    from doitray.study.prepare import prepare_study
    from doitray.train.stage import StageSpec, stage_key

    spec = _spec(tmp_path / "store")
    store = ResultsStore(spec.storage)
    first = prepare_study(spec, store)
    runs = tmp_path / "store" / "cache" / "pretrain"
    made = sorted(os.listdir(runs))
    assert len(made) == 1 and made[0].startswith("tiny-xs-")
    done = json.loads((runs / made[0] / "stage_complete.json").read_text())
    assert done["final_hf_path"] and done["metrics"], done
    base, scratch = first["models"]["xs"], first["models"]["xs0"]
    assert base["kind"] == "hf" and base["hf_dir"] == done["final_hf_path"] and base["key"].startswith("pretrain-")
    assert os.path.isfile(os.path.join(base["hf_dir"], "config.json"))
    assert scratch["kind"] == "config"  # a scratch level is not pretrained
    assert "pretrained xs (tiny-xs)" in capsys.readouterr().out

    mtime = os.path.getmtime(runs / made[0] / "stage_complete.json")
    again = prepare_study(spec, store)  # a second run of the study: nothing is trained
    assert "reused the pretrained base of xs" in capsys.readouterr().out
    assert sorted(os.listdir(runs)) == made and os.path.getmtime(runs / made[0] / "stage_complete.json") == mtime
    assert again["models"]["xs"] == base

    other = prepare_study(_spec(tmp_path / "store", tokens=7_000), store)  # other content: another base
    assert len(os.listdir(runs)) == 2 and other["models"]["xs"]["hf_dir"] != base["hf_dir"]

    # a cell's stage that starts from the base is other work than the same stage from scratch
    common = dict(name="s", model="tiny-xs", train_data="/d", storage_path="/s")
    assert stage_key(StageSpec(**common, source=base)) != stage_key(StageSpec(**common, source=scratch))
    assert stage_key(StageSpec(**common, source=scratch)) == stage_key(StageSpec(**common))

    # only the levels of the cells still to run are prepared: a pretrain level with none is not trained
    from doitray.study.cells import expand_cells

    spec3 = _spec(tmp_path / "store", tokens=8_000)
    third = prepare_study(spec3, store, [c for c in expand_cells(spec3) if c.levels["model"] == "xs0"])
    assert set(third["models"]) == {"xs0"} and len(os.listdir(runs)) == 2


def test_a_study_scores_its_pretrained_base_as_volume_0(write_study):
    """Through grid.py as the default runs: a volume-0 cell scores the pretrained base itself (nothing trained),
    and the report draws and tables it as the curves' base point."""
    import subprocess

    from studykit import child_env, grid_cmd

    study, storage = write_study(
        models={"xs": {"preset": "tiny-xs", "init": {"pretrain": PRETRAIN}}}, volumes=(0, 40),
        data_preparation="upfront", evaluation={"select": "last", "evaluate": "selected", "max_new_tokens": 8,
                                                "engine": {"shared": True}})
    p = subprocess.run(grid_cmd(study), capture_output=True, text=True, timeout=900, env=child_env(),
                       start_new_session=True)
    assert p.returncode == 0 and "2/2 cells done, 0 failed" in p.stdout, p.stdout[-3000:] + p.stderr[-5000:]
    store = ResultsStore(str(storage))
    cells = store.read("cells").set_index("volume")
    base, tuned = cells.loc[0], cells.loc[40]
    assert base["train_tokens"] == 0 and tuned["train_tokens"] > 0 and base["model_params"] == tuned["model_params"]
    assert base["construction"] is None or base["construction"] != base["construction"]  # None (NaN when read)
    (run,) = os.listdir(storage / "cache" / "pretrain")
    export = json.loads((storage / "cache" / "pretrain" / run / "stage_complete.json").read_text())["final_hf_path"]
    ck = store.read("checkpoints")
    mine = ck[ck["cell_id"] == base["cell_id"]].to_dict("records")
    assert [(c["checkpoint"], c["hf_path"], c["selected"]) for c in mine] == [("s0-base", export, True)]
    assert len(os.listdir(storage / "train")) == 1  # the tuned cell's run only
    scores = store.read("scores")
    got = scores[(scores["cell_id"] == base["cell_id"]) & (scores["split"] == "test")]
    assert len(set(got["ability"]) - {"overall"}) == 10 and (got["checkpoint"] == "s0-base").all()

    from doitray.report import text_summary
    from doitray.report.style import fmt

    text = text_summary(str(storage))
    row = next(line for line in text.splitlines() if line.startswith("base (not tuned)"))
    overall = got.loc[got["ability"] == "overall", "value"].iloc[0]
    assert fmt(overall, 3) in row
    html = (storage / "report.html").read_text(encoding="utf-8")
    assert re.search(r"xs (·|\\u00b7) base \(not tuned\)", html)  # the base's trace (JSON escapes the dot)
