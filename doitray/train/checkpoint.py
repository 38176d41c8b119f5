"""A Train worker's checkpoint: valid loss, sharded DCP for resume, an HF export when asked, the report."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from doitray.train import fsdp
from doitray.train.setup import Worker
from doitray.train.step import valid_loss
from doitray.train.storage import join, upload_dir, write_json

SYNC = "sync"  # marks a report that only waits for the previous one to be taken (no metrics)


def save_checkpoint(w: Worker, metrics: dict, *, final: bool) -> None:
    """Checkpoint after ``metrics["step"]`` and report it to Train (all ranks call this)."""
    import ray.train

    cfg, s = w.cfg, w.s
    step = metrics["step"]
    name = f"step{step:07d}"
    if w.valid is not None:
        metrics["valid_loss"] = valid_loss(w.model, w.valid, s.micro_batch, w.rank, w.ws, w.device, w.pad_id)
    d = tempfile.mkdtemp(prefix="doitray-ckpt-")
    fsdp.save_dcp(w.model, w.opt, d)
    export = final or w.policy.export == "all"
    hf_uri = join(cfg["export_root"], name, "hf") if export else None
    info = {"name": name, "step": step, "epoch": metrics["epoch"], "epoch_end": step % w.spe == 0 or final,
            "path": join(cfg["run_uri"], name), "hf_path": hf_uri, "valid_loss": metrics.get("valid_loss"),
            "train_loss": metrics["train_loss"], "final": final}
    if export:
        full = fsdp.full_state_dict(w.model)        # collective: all ranks
        if w.rank == 0:
            tmp = tempfile.mkdtemp(prefix="doitray-hf-")
            fsdp.write_hf(full, w.model.config, w.tok_dir, tmp, dtype=w.export_dtype, generation=cfg.get("generation"))
            upload_dir(tmp, hf_uri)
            shutil.rmtree(tmp, ignore_errors=True)
        del full
    if w.rank == 0:
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({**info, "world_size": w.ws, "settings_key": s.key()}, f)
        write_json(join(cfg["export_root"], name, "info.json"), info)
    fsdp.barrier()
    metrics["checkpoint"] = name
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=name,
                     delete_local_checkpoint_after_upload=True)
    if not final:
        # Each worker holds one report until the controller polls it: this second one returns
        # only once the checkpoint's report was taken, so a crash in the next steps resumes from it.
        ray.train.report({"step": step, SYNC: True})
