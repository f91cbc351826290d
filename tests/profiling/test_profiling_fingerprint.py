"""Device fingerprint: stable id over the fields that change numbers."""
from __future__ import annotations

import json

from hwnas.profiling.fingerprint import device_fingerprint, device_id


def test_fingerprint_is_stable_and_json():
    a, b = device_fingerprint(threads=1), device_fingerprint(threads=1)
    assert a == b and json.loads(json.dumps(a)) == a
    assert a["cpu_model"] and a["ort_version"] and a["ep"] == "cpu" and a["gpu_name"] is None


def test_id_changes_with_settings_not_with_cosmetics():
    a = device_fingerprint(threads=1)
    assert device_fingerprint(threads=2)["device_id"] != a["device_id"]
    assert device_fingerprint(batch_size=8)["device_id"] != a["device_id"]
    assert device_id({**a, "hostname": "elsewhere"}) == a["device_id"]
    assert device_id({**a, "ort_version": "0.0"}) != a["device_id"]
