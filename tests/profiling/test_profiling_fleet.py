"""A profiling fleet on a real local Ray cluster whose one node advertises a custom resource:
rows carry the fingerprint and canary reference measured on the worker, tasks reserve the
resource, an interrupted fleet resumes without duplicates, and bad input fails fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hwnas.errors import ClusterError
from hwnas.profiling.campaign import CampaignConfig, StopFlag
from hwnas.profiling.fleet import run_fleet
from hwnas.profiling.store import LatencyStore
from tests.cli_exit import cli_exit_code

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RESOURCE = "fleet_test"
CFG = CampaignConfig(space="tiny", num_archs=6, warmup=1, runs=3, calibration_sessions=2, calibration_gap_s=0.0)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, resources={RESOURCE: 2}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _worker_fingerprint(ray, cfg):
    from hwnas.profiling.distributed import worker_device

    return ray.get(ray.remote(resources={RESOURCE: 1})(worker_device).remote(cfg))


def test_fleet_rows_carry_the_workers_device_and_resume(cluster, tmp_path):
    node = cluster.get_runtime_context().get_node_id()
    stop, seen = StopFlag(), []

    def interrupt_after_two(row, res):  # a Ctrl-C after the second row: in-flight ones still land
        seen.append(row["arch"])
        if len(seen) == 2:
            stop.stop = True

    with LatencyStore(tmp_path / "fleet.db") as s:
        first = run_fleet(s, CFG, address="auto", resource=RESOURCE, on_row=interrupt_after_two, stop=stop)
        assert first.interrupted and len(first.devices) == 1
        dev = first.devices[0]
        assert dev.nodes == [node] and 2 <= dev.result.measured < CFG.num_archs
        # the device is the one the *worker* fingerprints, and its reference was measured there
        fp = _worker_fingerprint(cluster, CFG)
        assert dev.device_id == fp["device_id"] and s.fingerprint(dev.device_id)["device_id"] == fp["device_id"]
        (canary,) = s.canaries(dev.device_id)
        cal = canary["calibration"]["ray"]
        assert cal["node_id"] == node and cal["pid"] != os.getpid() and cal["resources"][RESOURCE] == 1.0
        rows = s.rows("tiny")
        for r in rows:
            ray_info = json.loads(r["extra"])["ray"]
            assert r["device_id"] == dev.device_id and ray_info["node_id"] == node and ray_info["pid"] != os.getpid()
            assert ray_info["resources"] == {"CPU": 1.0, RESOURCE: 1.0}  # what the task reserved
            assert r["calibrated"] and r["canary_id"] == canary["id"]
            assert r["latency_ms"] == pytest.approx(r["ratio"] * canary["reference_ms"])  # that device's reference

        again = run_fleet(s, CFG, address="auto", resource=RESOURCE)  # the same command resumes
        res = again.devices[0].result
        assert res.resumed and not again.interrupted and res.skipped == len(rows)
        assert res.measured == CFG.num_archs - len(rows)
        archs = [r["arch"] for r in s.rows("tiny")]
        assert len(archs) == len(set(archs)) == CFG.num_archs  # every planned arch once, none twice
        assert len(s.canaries()) == 1  # the reference is calibrated once per device, then reused


def test_cli_fleet_and_a_resource_no_worker_has(cluster, tmp_path, capsys):
    db = tmp_path / "cli.db"
    args = ["profile", "--db", str(db), "-n", "2", "--warmup", "1", "--runs", "2", "--calibration-sessions", "1",
            "--ray", "auto", "--ray-resource"]
    assert cli_exit_code(args + [RESOURCE, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resource"] == RESOURCE and out["measured"] == 2 and len(out["devices"]) == 1
    assert out["devices"][0]["ray_nodes"] == [cluster.get_runtime_context().get_node_id()]

    bad = tmp_path / "bad.db"
    assert cli_exit_code(["profile", "--db", str(bad), "--ray", "auto", "--ray-resource", "jetson_orin"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "advertises the resource 'jetson_orin'" in err and f"{RESOURCE}=2" in err  # says what there is
    assert not bad.exists()  # checked before the database is created
    with pytest.raises(ClusterError, match="jetson_orin"), LatencyStore(tmp_path / "lib.db") as s:
        run_fleet(s, CFG, address="auto", resource="jetson_orin")
    assert LatencyStore(tmp_path / "lib.db").rows() == []
    assert cli_exit_code(["profile", "--db", str(bad), "--ray-resource", RESOURCE]) == 2  # needs --ray
    assert "--ray-resource NAME runs a fleet on a Ray cluster" in capsys.readouterr().err and not bad.exists()


def test_unreachable_ray_address_fails_fast(tmp_path):
    """A fresh process (no Ray yet): a closed port is one line and exit 2 within seconds, no db."""
    t0 = time.perf_counter()
    db = tmp_path / "x.db"
    p = subprocess.run([sys.executable, "-m", "hwnas.cli", "profile", "--db", str(db), "--ray", "127.0.0.1:1",
                        "--ray-resource", RESOURCE], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no Ray cluster answers at '127.0.0.1:1'" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not db.exists()
    p = subprocess.run([sys.executable, "-m", "hwnas.cli", "profile", "--db", str(db), "--ray", "nowhere"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "is not a Ray address; give auto, local or HOST:PORT" in p.stderr, p.stderr
    assert time.perf_counter() - t0 < 30


def test_an_open_port_that_is_not_ray_is_bounded():
    """A port that accepts TCP but is no Ray head: ray.init would retry for minutes; ours gives up."""
    code = (
        "import socket, time\n"
        "from hwnas.errors import ClusterError\n"
        "from hwnas.ray_cluster import connect\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(4)\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    connect(f'127.0.0.1:{srv.getsockname()[1]}', timeout_s=2.0)\n"
        "except ClusterError as e:\n"
        "    print('ClusterError', round(time.perf_counter() - t, 1), e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("ClusterError") and "did not answer within 2 s" in p.stdout, p.stdout + p.stderr
    assert float(p.stdout.split()[1]) < 10
