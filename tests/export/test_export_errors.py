"""Bad input to export/evaluate: one clear HwnasError each, before any training."""
from __future__ import annotations

import json

import pytest

from hwnas.errors import ArchError, HwnasError
from hwnas.errors import ExportError, ProfilingError
from hwnas.evaluate import evaluate_onnx
from hwnas.export import ExportConfig, export_arch, read_run

TINY_ARCH = "k3_e2_w0.5-skip-k3_e2_w0.5-skip-k3_e2_w0.5-skip"


def _cfg(tmp_path, **kw):
    kw.setdefault("out", tmp_path / "model.onnx")
    return ExportConfig(epochs=0, **kw)


def test_run_dir_without_result_json(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("")
    with pytest.raises(ExportError, match=r"has no result\.json.*found: log\.jsonl"):
        export_arch(_cfg(tmp_path, run_dir=tmp_path / "run"))
    with pytest.raises(ExportError, match="does not exist"):
        read_run(tmp_path / "nope")


def test_result_json_that_is_not_a_search_result(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps({"space": "tiny"}))
    with pytest.raises(ExportError, match="lacks the key.*arch"):
        export_arch(_cfg(tmp_path, run_dir=tmp_path / "run"))


def test_arch_from_another_space(tmp_path, micro_space):
    with pytest.raises(ArchError, match="not an architecture of space 'micro'"):
        export_arch(_cfg(tmp_path, space="micro", arch=TINY_ARCH))
    with pytest.raises(ArchError, match="valid: "):
        export_arch(_cfg(tmp_path, space="tiny", arch="k3_e2_w0.5-skip-k9_e9-skip-k3_e2_w0.5-skip"))


def test_run_and_arch_together_or_neither(tmp_path):
    with pytest.raises(ExportError, match="not both"):
        export_arch(_cfg(tmp_path, run_dir=tmp_path, arch=TINY_ARCH))
    with pytest.raises(ExportError, match="nothing to export"):
        export_arch(_cfg(tmp_path))


def test_space_contradicting_the_run(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"space": "tiny", "arch": TINY_ARCH}))
    with pytest.raises(ExportError, match="contradicts the run's space 'tiny'"):
        export_arch(_cfg(tmp_path, run_dir=tmp_path, space="fbnet"))


def test_bad_output_paths(tmp_path):
    with pytest.raises(ExportError, match="output folder .* does not exist"):
        export_arch(_cfg(tmp_path, out=tmp_path / "missing" / "m.onnx", arch=TINY_ARCH))
    with pytest.raises(ExportError, match=r"must be a \.onnx file"):
        export_arch(_cfg(tmp_path, out=tmp_path / "m.json", arch=TINY_ARCH))
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        export_arch(_cfg(tmp_path, out=tmp_path / "d.onnx", arch=TINY_ARCH))


def test_bad_options(tmp_path):
    with pytest.raises(ProfilingError, match="unknown execution provider 'tpu'; valid: cpu, cuda, tensorrt"):
        export_arch(_cfg(tmp_path, arch=TINY_ARCH, ep="tpu"))
    with pytest.raises(ExportError, match="opset must be between 13 and 21, got 9"):
        export_arch(_cfg(tmp_path, arch=TINY_ARCH, opset=9))
    with pytest.raises(ExportError, match="needs a run folder"):
        export_arch(_cfg(tmp_path, arch=TINY_ARCH, from_supernet=True))
    with pytest.raises(HwnasError, match="epochs must be >= 0, got -1"):
        export_arch(ExportConfig(out=tmp_path / "m.onnx", arch=TINY_ARCH, epochs=-1, limit=40))


def test_from_supernet_without_weights(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"space": "tiny", "arch": TINY_ARCH}))
    with pytest.raises(ExportError, match=r"supernet\.pt' does not exist"):
        export_arch(_cfg(tmp_path, run_dir=tmp_path, from_supernet=True))


def test_evaluate_bad_inputs(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        evaluate_onnx(tmp_path / "none.onnx", "digits")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="cannot read ONNX model"):
        evaluate_onnx(tmp_path / "junk.onnx", "digits")
