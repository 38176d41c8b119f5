"""Pretrained bases: a model level with ``init: {pretrain: {...}}`` is pretrained once per study, on the driver
side of preparation (``prepare.prepare_models``), before any cell tunes it.

The base is a config preset trained on the generated suite's generic corpus (``data.synthetic_corpus``: plain
text, the loss on every token, packed by ``data.pipeline.pack_text``) by one Ray Train run of the project's own
loop (``train.stage.run_stage``). The run is named by a content hash of what determines the weights (preset,
corpus options, tokens, settings, tokenizer content, template) and lies under the study's shared cache
(``<storage>/cache/pretrain``, on object storage when the storage is remote), so every node fetches the same
export and a later run of the study finds it and trains nothing (it logs that it reused it). The cells then start
from that export exactly as they start from a ``pretrained`` model.
"""
from __future__ import annotations

import hashlib
import json
import math
import os

from doitray.study.spec import ModelLevel, StudySpec, pretrain_settings, train_resources

PRETRAIN_VERSION = 1
CHARS_PER_TOKEN = 4  # corpus characters generated per token asked for (more than the suite's tokenizers need)


def _settings(spec: StudySpec, level: ModelLevel):
    return pretrain_settings(spec.training, level, spec.resources[level.tier])


def corpus_options(spec: StudySpec, level: ModelLevel) -> dict:
    """The corpus of a pretrain level: its seed (default: the study's synthetic source's) and abilities."""
    seed = next((s.get("options", {}).get("seed", 0) for s in spec.sources if s.get("format") == "synthetic"), 0)
    opts = {"seed": int(level.pretrain.corpus.get("seed", seed))}
    if level.pretrain.corpus.get("abilities"):
        opts["abilities"] = list(level.pretrain.corpus["abilities"])
    return opts


def pretrain_key(spec: StudySpec, level: ModelLevel, tokenizer_dir: str) -> str:
    """What determines a base's weights, hashed: preset, corpus, tokens, settings, tokenizer content, template."""
    from doitray.data.tokenizer import tokenizer_hash
    from doitray.data.synthetic_corpus import CORPUS_VERSION

    parts = [PRETRAIN_VERSION, CORPUS_VERSION, level.preset.lower(), corpus_options(spec, level),
             level.pretrain.tokens, _settings(spec, level).model_dump(mode="json", exclude={"log_every"}),
             tokenizer_hash(tokenizer_dir), spec.template]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _workers(tier: dict) -> dict:
    """The Train workers of a pretraining run: the level's tier (``spec.train_resources``) at its smallest count."""
    res = train_resources(tier)
    counts = res["num_workers"]
    return {**res, "num_workers": counts if isinstance(counts, int) else counts[0]}


def pretrain_stage(spec: StudySpec, name: str, level: ModelLevel, source: dict, tokenizer_dir: str, work: str,
                   shared: str):
    """``(StageSpec | None, run_uri, key)`` of a level's pretraining: the spec is None when the run is already
    complete under the shared cache (nothing to generate, pack or train)."""
    from doitray.train.settings import CheckpointPolicy
    from doitray.train.stage import StageSpec, completed
    from doitray.train.storage import join

    key = pretrain_key(spec, level, tokenizer_dir)
    storage = join(shared, "pretrain")
    run_name = f"{level.preset.lower()}-{key}"
    run_uri = join(storage, run_name)
    if completed(run_uri) is not None:
        return None, run_uri, key
    from doitray.data.pipeline import pack_text
    from doitray.data.synthetic_corpus import write_corpus

    ps, settings = level.pretrain, _settings(spec, level)
    opts = corpus_options(spec, level)
    corpus = write_corpus(os.path.join(work, "corpus"), n_chars=ps.tokens * CHARS_PER_TOKEN, **opts)
    packed = pack_text(corpus, tokenizer_dir, settings.seq_len, work, max_tokens=ps.tokens)
    stage = StageSpec(name=f"pretrain-{name}", model=level.preset.lower(), tokenizer_dir=source["tokenizer_dir"],
                      template=spec.template, train_data=packed.path, settings=settings,
                      checkpoint=CheckpointPolicy(every="last", num_to_keep=1, export="last"),
                      storage_path=storage, run_name=run_name, cache_dir=os.path.join(work, "models"), source=source,
                      max_failures=spec.max_retries, **_workers(spec.resources[level.tier].model_dump()))
    return stage, run_uri, key


def base_source(result: dict, source: dict, key: str) -> dict:
    """The ``ModelSource`` dict of a pretrained base: its final HF export, keyed as a study-pretrained base
    (``train.stage.PRETRAINED_BASE``: the stage keys of the cells that start from it differ from scratch's)."""
    from doitray.train.stage import PRETRAINED_BASE
    from doitray.train.storage import join, read_json

    hf = result["final_hf_path"]
    cfg = read_json(join(hf, "config.json"))
    return {**source, "kind": "hf", "hf_dir": hf, "config": cfg, "key": f"{PRETRAINED_BASE}{key}"}


def pretrain_bases(spec: StudySpec, sources: dict[str, dict], tokenizer_dir: str, work: str,
                   shared: str) -> dict[str, dict]:
    """Each pretrain level's base (``{level: ModelSource dict}``) from its resolved config source: reused when its
    run is complete, else trained, the levels' runs at once (each a Ray task on this node holding no CPU of its
    own; its Train workers hold the tier's resources)."""
    import time

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from doitray.train.stage import completed, run_stage

    todo, out = {}, {}
    for name, level in ((n, spec.models[n]) for n in sources):  # the levels prepared (those with cells to run)
        if level.pretrain is None:
            continue
        stage, run_uri, key = pretrain_stage(spec, name, level, sources[name], tokenizer_dir, work, shared)
        if stage is None:
            print(f"[{spec.name}] reused the pretrained base of {name} ({level.preset}, {level.pretrain.tokens:,} "
                  f"tokens): {run_uri}", flush=True)
            out[name] = base_source(completed(run_uri), sources[name], key)
        else:
            todo[name] = (stage, key)
    if not todo:
        return out
    t0 = time.time()
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)  # the packed data
    task = ray.remote(num_cpus=0, max_retries=0, scheduling_strategy=here)(run_stage)
    refs = {name: task.remote(stage) for name, (stage, _) in todo.items()}
    for name, ref in refs.items():
        res = ray.get(ref)
        if res.final_hf_path is None:
            raise RuntimeError(f"pretraining {name} finished without a final HF export (run {res.run_path})")
        steps = max((c.step for c in res.checkpoints), default=0)
        loss = next((m["value"] for m in reversed(res.metrics) if m["metric"] == "train_loss"), math.nan)
        print(f"[{spec.name}] pretrained {name} ({spec.models[name].preset}): {steps} steps, final train loss "
              f"{loss:.3f}, {res.train_seconds:.0f}s: {res.run_path}", flush=True)
        out[name] = base_source(res.model_dump(), sources[name], todo[name][1])
    print(f"[{spec.name}] {len(todo)} base(s) pretrained in {time.time() - t0:.0f}s", flush=True)
    return out
