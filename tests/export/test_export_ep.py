"""Export on a GPU execution provider: real where a GPU exists, the fallback rules elsewhere."""
from __future__ import annotations

import pytest

from hwnas.errors import ProfilingError
from hwnas.export import ExportConfig, export_arch
from hwnas.profiling.providers import unavailable_reason

ARCH = "k3_e1-k3_e3_w0.5-skip"
NO_CUDA = unavailable_reason("cuda")


def _cfg(tmp_path, **kw):
    return ExportConfig(out=tmp_path / "m.onnx", space="micro", arch=ARCH, epochs=0, limit=60, latency_runs=3, latency_gap_s=0.0,
                        latency_warmup=1, train_threads=1, **kw)


@pytest.mark.skipif(NO_CUDA is None, reason="a CUDA GPU is present: the fallback path cannot happen")
def test_cuda_without_gpu_fails_clearly_unless_fallback(micro_space, tmp_path):
    with pytest.raises(ProfilingError, match="'cuda' is not usable.*allow-fallback"):
        export_arch(_cfg(tmp_path, ep="cuda"))
    assert not (tmp_path / "m.onnx").exists()
    res = export_arch(_cfg(tmp_path, ep="cuda", allow_fallback=True))
    # the fallback is recorded, never hidden: parity and latency ran on the CPU
    assert res.latency["ep"] == "cuda" and res.latency["ep_used"] == "cpu" and res.latency["fallback"] is True
    assert res.ep_parity.ep == "cuda" and res.ep_parity.ep_used == "cpu" and res.ep_parity.passed
    assert res.card["latency"]["fallback"] is True and res.card["device"]["ep"] == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=f"no usable CUDA provider: {NO_CUDA}")
@pytest.mark.parametrize("ep", ["cuda", "tensorrt"])
def test_gpu_export_parity_and_latency(micro_space, tmp_path, ep):
    if ep == "tensorrt" and unavailable_reason("tensorrt") is not None:
        pytest.skip(unavailable_reason("tensorrt"))
    res = export_arch(_cfg(tmp_path, ep=ep, dynamic_batch=True))
    assert res.ep_parity.ep_used == ep and res.ep_parity.passed and res.ep_parity.top1_agreement >= 0.95
    assert res.latency["ep_used"] == ep and not res.latency["fallback"] and res.measured_latency_ms > 0
    assert res.fingerprint["gpu_name"] and res.card["device"]["ep"] == ep
