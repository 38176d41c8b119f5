"""How fast a node gets a model from the study's storage: ``doitray.scratch.fetch`` (one stream per file, a lock,
a ``.complete`` marker) against pyarrow's own multi-threaded ``pyarrow.fs.copy_files``, same run, same server.

The storage is moto's S3 server on 127.0.0.1 (a real S3 API, a Python server: absolute figures are bounded by it,
far below a real bucket's; the ratio is what this measures). The folder is shaped like an HF export: ``--shards``
safetensors files of ``--shard-mb`` MB plus config and tokenizer files. Best of ``--repeat``, each into an empty
scratch. Prints MB/s for each and the ratio fetch / copy_files (> 1: fetch is slower).

    python bench/scratch_fetch.py [--shards 2] [--shard-mb 64] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "storage"))


def export_dir(root: Path, shards: int, shard_mb: int) -> int:
    root.mkdir(parents=True)
    for i in range(shards):
        (root / f"model-{i + 1:05d}-of-{shards:05d}.safetensors").write_bytes(os.urandom(shard_mb << 20))
    for name, size in (("config.json", 700), ("tokenizer.json", 2 << 20), ("tokenizer_config.json", 3000),
                       ("generation_config.json", 150), ("special_tokens_map.json", 400)):
        (root / name).write_bytes(b"x" * size)
    return sum(p.stat().st_size for p in root.iterdir())


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--shard-mb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import pyarrow.fs as pafs
    from s3kit import s3_server

    work = Path(tempfile.mkdtemp(prefix="doitray-fetch-bench-"))
    try:
        with s3_server("bench"):
            from doitray import scratch

            size = export_dir(work / "hf", args.shards, args.shard_mb)
            uri = "s3://bench/study/cache/models/hf"
            scratch.publish(str(work / "hf"), uri)

            def ours():
                os.environ["DOITRAY_SCRATCH"] = str(work / f"scratch-{time.perf_counter_ns()}")
                scratch.fetch(uri)

            def baseline():
                out = work / f"copy-{time.perf_counter_ns()}"
                out.mkdir()
                fs, path = pafs.FileSystem.from_uri(uri)
                pafs.copy_files(path, str(out), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem(), use_threads=True)

            t_base = best(baseline, args.repeat)
            t_ours = best(ours, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = size / 1e6
    print(f"folder: {args.shards} x {args.shard_mb} MB safetensors + 5 small files = {mb:.0f} MB, moto S3 on 127.0.0.1")
    print(f"pyarrow.fs.copy_files (threads): {t_base:6.2f} s  {mb / t_base:7.1f} MB/s")
    print(f"doitray.scratch.fetch:           {t_ours:6.2f} s  {mb / t_ours:7.1f} MB/s")
    print(f"ratio fetch / copy_files: {t_ours / t_base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
