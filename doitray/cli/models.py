"""`doitray plan MODEL --gpus N --gpu-mem 80 --seq 2048 --micro-batch 1 [--ac] [--json]`."""
from __future__ import annotations

import argparse

from doitray.console import CommandError, add_json_flag, emit, table
from doitray.models.memory import GIB, memory_plan
from doitray.models.presets import PRESETS, get_preset, param_counts


def register(sub) -> None:
    p = sub.add_parser("plan", help="memory per GPU of an FSDP2 fine-tune of a model preset")
    p.add_argument("model", help=f"a preset ({', '.join(PRESETS)}) or 'all'")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-mem", type=float, default=80.0, help="GiB per GPU")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--ac", action="store_true", help="activation checkpointing on")
    add_json_flag(p)
    p.set_defaults(func=_run)


def _gib(b: int) -> str:
    return f"{b / GIB:.2f}"


def _run(args: argparse.Namespace) -> int:
    names = list(PRESETS) if args.model == "all" else [args.model]
    plans = []
    for name in names:
        try:
            preset = get_preset(name)
            plans.append(memory_plan(preset, gpus=args.gpus, gpu_mem_gib=args.gpu_mem, seq_len=args.seq,
                              micro_batch=args.micro_batch, activation_checkpointing=args.ac))
        except ValueError as e:
            raise CommandError(str(e)) from None
    payload = [dict(pl.as_dict(), published_params=get_preset(pl.model).published_params,
                    non_embedding_params=param_counts(get_preset(pl.model))["non_embedding"]) for pl in plans]

    def text(rows):
        rows = rows if isinstance(rows, list) else [rows]
        out = [{"model": r["model"], "params(B)": f"{r['params'] / 1e9:.3f}",
                "published(B)": "" if r["published_params"] is None else f"{r['published_params'] / 1e9:.3f}",
                "params GiB": _gib(r["param_bytes"]), "grads GiB": _gib(r["grad_bytes"]),
                "optim GiB": _gib(r["optimizer_bytes"]), "acts GiB": _gib(r["activation_bytes"]),
                "total GiB": _gib(r["total_bytes"]), "fits": "yes" if r["fits"] else "no",
                "min GPUs": "never" if r["min_gpus"] is None else r["min_gpus"]} for r in rows]
        head = (f"FSDP2, bf16 mixed precision, AdamW; {args.gpus} x {args.gpu_mem:g} GiB GPUs, seq {args.seq}, "
                f"micro-batch {args.micro_batch}, activation checkpointing {'on' if args.ac else 'off'}")
        return head + "\n" + table(out)

    emit(args, payload[0] if len(payload) == 1 else payload, text)
    return 0
