"""Per-program overhead of the code sandbox: today's (bubblewrap + seccomp + harness, ``doitray.eval.sandbox``)
against the one it replaced (``unshare`` + ``prlimit`` + Python guards, ``bench/_sandbox_baseline.py``), same run.

Each program is a HumanEval-style reference solution through ``build_program``: the first ``--programs``
items of HumanEval when ``--humaneval`` points at the file, else a small arithmetic program. Both sandboxes
run the same programs one at a time (``--workers 1``) and then with ``--workers`` threads, best of
``--repeat``. Prints ms per program for each and the ratio new / old; ``--fallback`` adds the ``setpriv``
layer (bubblewrap made unavailable).

    python bench/sandbox_overhead.py [--programs 40] [--workers 2] [--repeat 3] [--humaneval PATH] [--fallback]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _sandbox_baseline as old  # noqa: E402

from doitray.eval import sandbox  # noqa: E402


def programs(n: int, humaneval: str | None) -> list[str]:
    if not humaneval:
        return ["def f(a, b):\n    return a + b\n\nassert f(%d, 1) == %d\n" % (i, i + 1) for i in range(n)]
    from doitray.data.sources import SourceSpec, read_sources
    from doitray.eval.programs import build_program, reference_completion
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        recs, _ = read_sources([SourceSpec(name="he", format="humaneval", path=humaneval)], cache)
    return [build_program(r, reference_completion(r)) for r in recs[:n]]


def best_ms(run, srcs: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = run(srcs)
        best = min(best, time.perf_counter() - t0)
        assert all(r.passed for r in res), [getattr(r, "note", r.stderr[-200:]) for r in res if not r.passed][:3]
    return 1000 * best / len(srcs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--humaneval", default=None)
    ap.add_argument("--fallback", action="store_true", help="also time the setpriv layer (bubblewrap unavailable)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    srcs = programs(a.programs, a.humaneval)
    out: dict = {"programs": len(srcs), "isolation": sandbox.isolation()["label"], "old": old.isolation()}
    for w in sorted({1, a.workers}):
        o = best_ms(lambda s: old.run_many(s, workers=w), srcs, a.repeat)
        n = best_ms(lambda s: sandbox.run_many(s, workers=w), srcs, a.repeat)
        out[f"workers={w}"] = {"old_ms": round(o, 1), "new_ms": round(n, 1), "ratio_new_over_old": round(n / o, 2)}
        if a.fallback:
            os.environ["DOITRAY_BWRAP"] = ""
            f = best_ms(lambda s: sandbox.run_many(s, workers=w, allow_unsafe=True), srcs, a.repeat)
            del os.environ["DOITRAY_BWRAP"]
            out[f"workers={w}"].update(setpriv_ms=round(f, 1), ratio_setpriv_over_old=round(f / o, 2))
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['programs']} programs; new sandbox: {out['isolation']}; old: unshare={bool(out['old']['network_namespace'])}")
    for k, v in out.items():
        if k.startswith("workers="):
            extra = (f", setpriv {v['setpriv_ms']} ms ({v['ratio_setpriv_over_old']}x)" if "setpriv_ms" in v else "")
            print(f"{k}: old {v['old_ms']} ms/program, new {v['new_ms']} ms/program, "
                  f"ratio new/old {v['ratio_new_over_old']}x{extra}")


if __name__ == "__main__":
    main()
