"""``kill -9`` in the middle of ``hwnas profile``, then the same command again."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

N = 12
COLS = "arch, median_ms, mean_ms, std_ms, p10_ms, p90_ms, runs, flops, created"


def _rows(db):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute(f"SELECT {COLS} FROM latency ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        c.close()


CALIB = ["--calibration-sessions", "2", "--calibration-gap", "0"]


def _canaries(db):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("SELECT * FROM canaries ORDER BY id").fetchall()
    finally:
        c.close()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [["--no-canary", "--repeats", "1"], ["--no-canary", "--repeats", "3", "--chunk", "4"],
                                      ["--chunk", "4", *CALIB]],
                         ids=["one-session", "repeats3-chunk4", "paired"])
def test_sigkill_mid_campaign_then_resume(tmp_path, protocol):
    """With repeats, rows of a chunk are committed in its last round; the kill lands
    between chunks or inside one, and either way the resume completes without duplicates."""
    db = tmp_path / "lat.db"
    cmd = [sys.executable, "-m", "hwnas.cli", "profile", "--space", "tiny", "-n", str(N), "--db", str(db),
           "--warmup", "2", "--runs", "30", *protocol, "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if db.exists() and len(_rows(db)) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "campaign finished before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = _rows(db)
    canaries_before = _canaries(db)
    assert 3 <= len(before) < N
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = _rows(db)
    assert len(after) == N
    assert len({r[0] for r in after}) == N  # no duplicates
    assert after[: len(before)] == before  # rows written before the kill are intact, byte for byte
    assert '"resumed": true' in done.stdout
    # the canary reference is set once and never silently replaced by the resumed run
    assert _canaries(db) == canaries_before
    assert len(canaries_before) == (1 if "--no-canary" not in protocol else 0)
