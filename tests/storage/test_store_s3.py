"""The results store on a real S3 API (moto's server): parts rewritten by one writer while another reads."""
from __future__ import annotations

import threading

from doitray.store import ResultsStore


def test_reading_while_another_writer_replaces_its_part(s3):
    """A reader never sees half of one version of a part and half of another (one GET per part)."""
    store = ResultsStore("s3://doitray-test/study")
    store.write("cells", "b", [{"cell_id": "b", "state": "running", "attempts": 1}])
    stop, errors = threading.Event(), []

    def writer():
        n = 0
        while not stop.is_set():  # the other cell's part, at a different size each time
            n += 1
            store.write("cells", "a", [{"cell_id": "a", "state": "running", "attempts": n,
                                        "error": "x" * (n % 7) * 500}])

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(40):
            try:
                df = store.read("cells")
                assert "b" in set(df["cell_id"])
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(repr(e))
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
