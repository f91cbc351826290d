"""The state constant: the model, its fit and acceptance, and its use in rows and final checks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwnas.cli.main import main
from hwnas.profiling.campaign import CampaignConfig, run_campaign
from hwnas.profiling.canary import CanaryReference, build_canary, calibrate, probe_archs
from hwnas.profiling.contention import (MIN_GAIN, MIN_SPAN, accept_gamma, calibrated_ms, decompress, fit_gamma,
                                        gamma_of)
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.protocol import measure_model, reference_for

FAST = dict(warmup=1, runs=5, calibration_sessions=2, calibration_gap_s=0.0)


def _compressed(r_ref: float, f: float, gamma: float) -> float:
    """What the model says a session at speed factor ``f`` observes."""
    return float(np.exp(np.log(r_ref) * (1 - gamma * np.log(f))))


def _observations(gamma: float, fs, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(k, _compressed(r, f, gamma) * (1 + noise * rng.standard_normal()), f)
            for f in fs for k, r in (("S", 0.3), ("L", 3.0))]


def test_decompress_inverts_the_model_and_is_the_identity_without_a_constant():
    for r, f in [(0.3, 1.4), (3.0, 1.4), (0.5, 0.8), (1.0, 1.6)]:
        assert decompress(_compressed(r, f, 0.4), f, 0.4) == pytest.approx(r)
        assert decompress(r, f, 0.0) == r and decompress(r, f, None) == r
    assert decompress(0.5, 1.0, 0.4) == pytest.approx(0.5)  # at the reference's speed nothing moves
    # a wild speed factor never explodes a row: the divisor is clipped to [0.5, 2]
    assert decompress(0.5, 100.0, 1.5) == pytest.approx(0.5 ** 2)
    assert calibrated_ms(0.5, None, 2.0, 0.4) == 1.0  # no canary median: plain ratio x reference
    assert calibrated_ms(0.5, 2.8, 2.0, 0.4) == pytest.approx(decompress(0.5, 1.4, 0.4) * 2.0)


def test_fit_recovers_a_known_constant_and_is_accepted_only_when_the_data_demand_it():
    obs = _observations(0.4, np.linspace(0.85, 1.45, 8), noise=0.01)
    assert fit_gamma(obs) == pytest.approx(0.4, abs=0.05)
    ok = accept_gamma(obs)
    assert ok["gamma"] == ok["fitted"] and ok["gain"] >= MIN_GAIN and ok["span"] >= MIN_SPAN
    # one state: f spans 3%, the constant is not identified, whatever the fit says
    narrow = accept_gamma(_observations(0.4, np.linspace(1.0, 1.03, 8), noise=0.01))
    assert narrow["gamma"] == 0.0 and "one state" in narrow["why"]
    # ratios that do not compress (fbnet on the benchmark's VM): noise only, no gain
    flat = accept_gamma(_observations(0.0, np.linspace(0.85, 1.45, 8), noise=0.03))
    assert flat["gamma"] == 0.0 and flat["gain"] < MIN_GAIN and "do not compress" in flat["why"]
    # ratios that *expand* with contention (a negative constant fits the probes): refused, as the
    # one such constant a calibration kept did not carry to the other archs (canary_m1.md)
    expand = accept_gamma(_observations(-0.3, np.linspace(0.85, 1.45, 8), noise=0.01))
    assert expand["gamma"] == 0.0 and expand["fitted"] >= 0.0 and "do not compress" in expand["why"]
    few = accept_gamma(_observations(0.4, [0.9, 1.4]))
    assert few["gamma"] == 0.0 and few["fitted"] is None
    assert gamma_of({"calibration": {"statistic": "q0.25"}}) == 0.0 and gamma_of(None) == 0.0


def test_probes_are_the_low_and_high_flops_archs_of_the_canary_rule_sample(micro_space):
    from hwnas.cost import arch_cost

    p = probe_archs(micro_space)
    assert p == probe_archs(micro_space)  # seeded: every machine probes the same archs
    rng = np.random.default_rng(0)
    flops = sorted(arch_cost(micro_space, a).flops for a in (micro_space.sample(rng) for _ in range(101)))
    assert [arch_cost(micro_space, micro_space.parse(p[k])).flops for k in "SL"] == [flops[3], flops[97]]


def test_a_calibration_block_with_probes_records_their_sessions_and_its_decision(micro_space):
    canary = build_canary("micro")
    ref = calibrate(canary, sessions=3, runs=5, gap_s=0.0, warmup=1, probes=True)
    st = ref.state
    assert st["probes"] == probe_archs(micro_space) and [o[0] for o in st["obs"]] == ["S", "L"] * 3
    assert all(r > 0 and c > 0 for _, r, c in st["obs"])
    again = accept_gamma([(k, r, c / ref.reference_ms) for k, r, c in st["obs"]])
    assert ref.gamma == again["gamma"] and st["why"] == again["why"]
    assert ref.to_dict()["gamma"] == ref.gamma and ref.to_dict()["state"] == st
    assert calibrate(canary, sessions=2, runs=5, gap_s=0.0, warmup=1).state is None  # a quick block: no probes


def test_rows_and_recalibration_use_the_stored_constant(store, micro_space, capsys):
    run_campaign(store, CampaignConfig(space="micro", num_archs=3, **FAST))
    (c,) = store.canaries()
    assert c["calibration"]["gamma"] == 0.0  # two sessions per probe: not enough to learn one
    state = {"probes": {}, "obs": [], "gamma": 0.4, "fitted": 0.4, "span": 1.4, "gain": 0.8, "why": "test"}
    new = CanaryReference(c["reference_ms"] * 0.5, "test", (c["reference_ms"] * 0.5,), 0.0, "now", 0.4, state)
    assert store.recalibrate_canary(c["id"], new) == 3
    for r in store.rows("micro"):  # every stored row recomputed from its ratio and canary median
        assert r["latency_ms"] == pytest.approx(calibrated_ms(r["ratio"], r["canary_median_ms"],
                                                              new.reference_ms, 0.4))
    run_campaign(store, CampaignConfig(space="micro", num_archs=2, **FAST))  # reuses the constant
    rows = store.rows("micro")
    assert len(rows) == 5
    for r in rows:
        f = r["canary_median_ms"] / new.reference_ms
        assert r["latency_ms"] == pytest.approx(decompress(r["ratio"], f, 0.4) * new.reference_ms)
        assert abs(f - 1) < 0.01 or r["latency_ms"] != pytest.approx(r["ratio"] * new.reference_ms)
    main(["data", "show", "--db", str(store.path)])
    assert "state constant 0.40 (test)" in capsys.readouterr().out

    # a final check on this machine decompresses with the data's constant, session by session
    fp = store.dataset("micro").fingerprint
    canary = build_canary("micro")
    ref = reference_for(canary, fp)
    assert ref.source == "predictor" and ref.gamma == 0.4
    arch = arch_to_onnx(micro_space, micro_space.sample(5)).SerializeToString()
    m = measure_model(arch, canary, ref, warmup=1, runs=10, sessions=3, gap_s=0.0)
    plain = measure_model(arch, canary, dataclasses.replace(ref, gamma=0.0), warmup=1, runs=10, sessions=3, gap_s=0.0)
    assert m.gamma == 0.4 and plain.gamma == 0.0
    assert plain.latency_ms == pytest.approx(plain.ratio * ref.reference_ms)
    assert m.ratio in m.session_ratios
    f = m.canary_median_ms / ref.reference_ms
    assert m.latency_ms == pytest.approx(decompress(m.ratio, f, 0.4) * ref.reference_ms)
