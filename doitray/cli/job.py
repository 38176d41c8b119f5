"""The main job: connect to (or start) Ray, run or resume a study, write its report.

Shared by ``python experiments/grid.py`` and ``doitray study run``; it calls both ``study`` and
``report``, so it lives in the top layer with the commands.
"""
from __future__ import annotations

import os
import socket
import sys
import time

from doitray.console import CommandError
from doitray.study.spec import StudySpec

LOCAL_DRIVER_SLOTS = 1000  # TRAIN_DRIVER units on a local node: trial drivers never wait for it
# Logical CPUs beyond the cores on a local Ray: Ray Data's read tasks and tokenizer actors and the
# evaluation replicas need slots while cells' Train workers hold theirs (without them a data
# pipeline can wait forever for a CPU). Studies bound their cells with `concurrency`.
LOCAL_SPARE_CPUS = 2


def load_spec(path: str, storage: str | None = None, *, unset: list | None = None) -> StudySpec:
    """A study file as the commands load it: a ``${NAME}`` whose variable is not set is an error naming it and
    the fields that use it, unless ``unset`` is given to collect them (a plan of the grid alone)."""
    from doitray.study.spec import load_study, unset_error

    found: list[tuple[str, str]] = []
    spec = load_study(path, overrides={"storage": storage} if storage else None, unset_env=found)
    if unset is not None:
        unset.extend(found)
    elif found:
        raise unset_error(str(path), found)
    return spec


def check_ray_address(address: str, origin: str = "--address", timeout: float = 5.0) -> None:
    """Fail in one line when nothing listens at a ``host:port`` Ray address (``ray.init`` would retry for
    minutes). ``auto``, ``local`` and addresses without a port are left to ``ray.init``."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    host = host.strip("[]") or "127.0.0.1"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        unset = "unset RAY_ADDRESS" if origin == "RAY_ADDRESS" else "omit --address"
        raise CommandError(f"no Ray cluster at {origin} {address} ({why}) — start one there (`ray start --head`), "
                           f"give the address of a running cluster, or {unset} to start a local Ray") from e


def connect_ray(address: str | None = None, *, num_cpus: int | None = None) -> str:
    """Attach to ``address`` / ``RAY_ADDRESS`` (``ray job submit`` sets it), else start a local Ray.

    A local Ray gets the ``TRAIN_DRIVER`` resource so trial drivers are placed as on a cluster.
    """
    import ray

    if ray.is_initialized():
        return "existing"
    env = {"RAY_DATA_DISABLE_PROGRESS_BARS": os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS", "1")}
    origin = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address, origin)
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        except ConnectionError as e:  # e.g. address "auto" with no cluster on this machine
            raise CommandError(f"no Ray cluster at {origin} {address} ({str(e).split('.')[0]}) — start one "
                               "(`ray start --head`) or give the address of a running cluster") from e
        return address
    for attempt in range(3):
        try:
            # address="local": never attach to another Ray that happens to run on this machine
            ray.init(address="local", num_cpus=num_cpus or (os.cpu_count() or 2) + LOCAL_SPARE_CPUS,
                     resources={"TRAIN_DRIVER": LOCAL_DRIVER_SLOTS},
                     include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
            return "local"
        except Exception as e:  # Ray gives a starting raylet 30 s; a busy machine can need longer
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
            ray.shutdown()
            time.sleep(5)
    return "local"


def preflight(spec: StudySpec) -> None:
    """What a run needs before Ray starts: every local data and model path exists, and the storage can be
    reached and written (one line naming the field or the storage otherwise)."""
    from doitray.store import ResultsStore
    from doitray.study.spec import check_paths

    check_paths(spec)
    ResultsStore(spec.storage).check_writable()


def main_run(spec: StudySpec, *, address: str | None = None, retry_failed: bool = False, report: bool = True,
             quiet: bool = False) -> dict:
    """Run the study end to end; returns where its results and report are."""
    import ray.data

    from doitray.report.build import write_report
    from doitray.study.runner import run_study, track_report

    t0 = time.time()
    preflight(spec)
    where = connect_ray(address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"[doitray] study {spec.name} on Ray ({where}); results under {spec.storage}")
    outcome = run_study(spec, retry_failed=retry_failed)
    out = {"study": spec.name, "storage": outcome.root, "cells": outcome.total, "done": outcome.done,
           "failed": outcome.failed, "skipped_already_done": outcome.skipped,
           "tables": os.path.join(outcome.root, "tables"), "wall_s": round(time.time() - t0, 1)}
    if report:
        out["report"] = write_report(outcome.root)
        track_report(spec, out["report"])
    return out
