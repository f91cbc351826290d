"""Fixtures shared by the profiling tests."""
import pytest

from hwnas.profiling.store import LatencyStore


@pytest.fixture
def store(tmp_path):
    """A fresh, real SQLite latency store in the test's folder."""
    s = LatencyStore(tmp_path / "lat.db")
    yield s
    s.close()
