import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3kit import s3_server  # noqa: E402


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A bucket ``doitray-test`` on a local S3 server, and this test's own scratch folder."""
    monkeypatch.setenv("DOITRAY_SCRATCH", str(tmp_path / "scratch"))
    with s3_server("doitray-test") as env:
        yield env
