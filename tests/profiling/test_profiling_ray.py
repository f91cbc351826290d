"""A campaign on a local 2-CPU Ray cluster; rows stream back to the one writer."""
from __future__ import annotations

import pytest

from hwnas.profiling.campaign import CampaignConfig, run_campaign
from hwnas.profiling.store import LatencyStore


@pytest.mark.ray
@pytest.mark.slow
def test_ray_campaign_on_local_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        seen = []
        with LatencyStore(tmp_path / "lat.db") as s:
            cfg = CampaignConfig(space="tiny", num_archs=4, warmup=1, runs=3, calibration_sessions=2,
                                 calibration_gap_s=0.0)
            r = run_campaign(s, cfg, ray_address="auto", on_row=lambda row, res: seen.append(res.measured))
            assert r.measured == 4 and r.errors == 0
            assert seen == [1, 2, 3, 4]  # committed one by one as results arrive
            rows = s.rows("tiny")
            assert len({x["arch"] for x in rows}) == 4 and all(x["median_ms"] > 0 for x in rows)
            r2 = run_campaign(s, cfg, ray_address="auto")  # skip-stored works the same on Ray
            assert r2.measured == 4 and len(s.rows("tiny")) == 8
    finally:
        ray.shutdown()
