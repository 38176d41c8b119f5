"""One owner per shared stage (``doitray.study.owners``) on a real local Ray: two cells entering the same stage
at once train it one after the other's record, and a lease whose owner stopped beating is taken over."""
from __future__ import annotations

import threading
import time

import pytest

from doitray.study import owners


@pytest.fixture
def leases(ray_local, request):
    study = f"owners-{request.node.name}"
    actor = owners.start(study, lease_s=getattr(request, "param", owners.LEASE_S))
    yield study, actor
    ray_local.kill(actor)


def test_a_shared_stage_is_trained_by_one_cell_while_the_other_waits(leases, tmp_path):
    study, _ = leases
    record = tmp_path / "stage_complete.json"
    events, logs = [], []

    def cell(name: str, hold: float):
        with owners.owned(study, "runs/specialist-abc", name, record.exists, log=logs.append):
            if record.exists():
                events.append((name, "reused"))
                return
            events.append((name, "trains"))
            time.sleep(hold)                # the stage trains; the other cell must not start it meanwhile
            record.write_text("{}")
            events.append((name, "done"))

    a = threading.Thread(target=cell, args=("cell-a", 3.0))
    a.start()
    time.sleep(0.5)
    b = threading.Thread(target=cell, args=("cell-b", 0.0))
    b.start()
    a.join(30)
    b.join(30)
    assert events == [("cell-a", "trains"), ("cell-a", "done"), ("cell-b", "reused")]
    assert logs == ["doitray: stage specialist-abc is being trained by cell cell-a; cell cell-b waits for it"]


def test_the_owner_releases_its_lease_when_its_stage_fails(leases, tmp_path):
    study, actor = leases
    with pytest.raises(RuntimeError):
        with owners.owned(study, "runs/s1", "cell-a", lambda: False):
            raise RuntimeError("stage failed")
    import ray

    assert ray.get(actor.claim.remote("runs/s1", "cell-b")) is None   # free for the next cell


@pytest.mark.parametrize("leases", [1.0], indirect=True)
def test_a_lapsed_lease_is_taken_over(leases):
    """The owner's node died (no heartbeat): after the lease time another cell trains the stage (resuming it)."""
    import ray

    study, actor = leases
    assert ray.get(actor.claim.remote("runs/s1", "dead-cell")) is None
    t0 = time.monotonic()
    with owners.owned(study, "runs/s1", "cell-b", lambda: False, log=lambda _: None):
        waited = time.monotonic() - t0
    assert 0.9 <= waited < 10


def test_without_a_study_actor_a_stage_is_trained_uncoordinated(ray_local):
    ran = []
    with owners.owned("no-such-study", "runs/s1", "cell-a", lambda: False):
        ran.append(1)
    assert ran == [1]
