"""One owner per shared training stage: cells whose stages have the same key (DMT cells that differ only in k,
and mixed-sequential, share stage 1) train it once; the others wait for its completion record.

The study's driver starts one ``StageOwners`` actor (``start``); a cell claims a stage's run before training it
(``owned``). A claim is a lease kept alive by a heartbeat: when the owner's process dies with its node, the
lease lapses after ``LEASE_S`` and a waiting cell takes the stage over, resuming it from its latest checkpoint.
Without the actor (a cell run outside a study) a stage is trained without coordination.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import ray

LEASE_S = 90.0      # a lease not renewed for this long is free (the owner's node is gone)
HEARTBEAT_S = 10.0
POLL_S = 2.0


@ray.remote(num_cpus=0)
class StageOwners:
    """Leases on stage runs: run URI -> (owner, time of its last heartbeat)."""

    def __init__(self, lease_s: float = LEASE_S):
        self._leases: dict[str, tuple[str, float]] = {}
        self._lease_s = lease_s

    def claim(self, run: str, owner: str) -> str | None:
        """None when ``owner`` holds ``run`` now; else the holder."""
        now = time.monotonic()
        held = self._leases.get(run)
        if held is None or held[0] == owner or now - held[1] > self._lease_s:
            self._leases[run] = (owner, now)
            return None
        return held[0]

    def beat(self, run: str, owner: str) -> None:
        if self._leases.get(run, ("",))[0] == owner:
            self._leases[run] = (owner, time.monotonic())

    def release(self, run: str, owner: str) -> None:
        if self._leases.get(run, ("",))[0] == owner:
            del self._leases[run]


def actor_name(study: str) -> str:
    return f"doitray-stage-owners-{study}"


def start(study: str, lease_s: float = LEASE_S):
    """The study's lease actor, started by the driver (a trial's actor would die with its trial)."""
    return StageOwners.options(name=actor_name(study), get_if_exists=True).remote(lease_s)


def _find(study: str):
    try:
        return ray.get_actor(actor_name(study))
    except ValueError:
        return None


@contextmanager
def owned(study: str, run: str, owner: str, done: Callable[[], bool],
          log: Callable[[str], None] = print) -> Iterator[None]:
    """Returns once ``owner`` holds the lease on stage run ``run`` or the stage is ``done``; the body trains it
    (or finds its record), and the lease is released when the body ends, even by an error."""
    actor = _find(study)
    if actor is None:
        yield
        return
    waited_for, holding = None, False
    while not done():
        holder = ray.get(actor.claim.remote(run, owner))
        if holder is None:
            holding = True
            break
        if waited_for != holder:
            log(f"doitray: stage {run.rstrip('/').rsplit('/', 1)[-1]} is being trained by cell {holder}; "
                f"cell {owner} waits for it")
            waited_for = holder
        time.sleep(POLL_S)
    if not holding:  # completed by its owner: the body finds the record
        yield
        return
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(HEARTBEAT_S):
            actor.beat.remote(run, owner)

    beating = threading.Thread(target=heartbeat, daemon=True, name="doitray-stage-lease")
    beating.start()
    try:
        yield
    finally:
        stop.set()
        ray.get(actor.release.remote(run, owner))
