"""Device fingerprint: stable id over the fields that change numbers."""
from __future__ import annotations

import hashlib
import json

import pytest

from hwnas.profiling import fingerprint as fpmod
from hwnas.profiling.fingerprint import (IDENTITY_FIELDS, cpu_caches, describe_side_by_side, device_fingerprint,
                                         device_id, device_name, hardware_diff, missing_identity, parse_cpuinfo)


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


X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse sse2 sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp sve sve2 i8mm bf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
"""


def test_parse_cpuinfo_x86_and_arm():
    from hwnas.profiling.fingerprint import parse_cpuinfo

    x = parse_cpuinfo(X86)
    assert (x["cpu_model"], x["cpu_vendor"], x["cpu_family"], x["cpu_model_number"], x["cpu_stepping"]) == (
        "AMD EPYC", "AuthenticAMD", 25, 17, 1)
    assert x["cpu_flags"] == sorted(["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                                     "avx512_vnni", "avx512_bf16"])  # sha_ni is not a dispatch flag
    a = parse_cpuinfo(ARM)
    assert a["cpu_vendor"] == "0x41" and a["cpu_family"] == 8 and a["cpu_model_number"] == 0xd40
    assert a["cpu_flags"] == ["asimd", "asimddp", "bf16", "i8mm", "sve", "sve2"]
    assert parse_cpuinfo("")["cpu_flags"] == []


def test_two_hosts_of_one_model_name_get_two_ids():
    """The reported case: both say 'AMD EPYC', one has AVX-512 (family 25 model 17)."""
    here = device_fingerprint(threads=1)
    # both hosts built from this one's fingerprint, so the test holds on either kind of host
    old = {**here, "cpu_model_number": 1, "cpu_flags": sorted(set(here["cpu_flags"]) - {"avx512f"})}
    new = {**here, "cpu_model_number": 17, "cpu_flags": sorted({*here["cpu_flags"], "avx512f"})}
    assert device_id(old) != device_id(new)
    assert device_id({**old, "cpu_model_number": 17}) != device_id(old)  # the model number alone tells them apart
    a = {**here, "device_id": device_id(here)}
    assert device_id({**a, "cpu_family": 23}) != a["device_id"]
    assert device_id({**a, "protocol": "plain"}) != a["device_id"]
    assert device_id({**a, "hostname": "elsewhere"}) == a["device_id"]


def test_old_fingerprints_keep_their_id_and_say_what_they_lack():
    import hashlib

    from hwnas.profiling.fingerprint import ID_FIELDS, missing_identity

    old = {"cpu_model": "AMD EPYC", "cpu_count": 2, "machine": "x86_64", "gpu_name": None, "gpu_driver": None,
           "ort_version": "1.31.1", "ep": "cpu", "ep_options": {}, "threads": 1, "batch_size": 1,
           "precision": "fp32", "repeats": 3, "hostname": "h"}
    key = {k: old.get(k) for k in ID_FIELDS}
    key["repeats"] = 3  # the rule of the code that stored it
    want = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
    assert device_id(old) == want[:12]
    lacks = missing_identity(old)
    assert "cpu_family" in lacks and "cpu_flags" in lacks and "cpu_model" not in lacks
    assert missing_identity(device_fingerprint(threads=1)) == []
    assert missing_identity({"imported": True, "name": "x"}) == ["hardware (imported data: only a name)"]


def test_hardware_diff_and_side_by_side():
    from hwnas.profiling.fingerprint import describe_side_by_side, hardware_diff

    a = device_fingerprint(threads=1)
    assert hardware_diff(a, device_fingerprint(threads=2)) == []  # settings are not hardware
    b = {**a, "cpu_model_number": a["cpu_model_number"] + 16}  # another model, whichever this host is
    assert hardware_diff(a, b) == [("cpu_model_number", a["cpu_model_number"], b["cpu_model_number"])]
    text = describe_side_by_side(a, b, labels=("shipped", "here"))
    lines = text.splitlines()
    assert "shipped" in lines[0] and "here" in lines[0]
    marked = [ln for ln in lines if ln.startswith("*")]
    assert [ln.split()[1] for ln in marked] == ["cpu_model_number"]
    assert not any("cpu_family" in ln for ln in marked)  # equal fields are shown unmarked


def test_device_name_shows_family_and_protocol():
    from hwnas.profiling.fingerprint import device_name

    a = device_fingerprint(threads=1)
    assert f"fam {a['cpu_family']} model {a['cpu_model_number']}" in device_name(a)
    assert device_name(device_fingerprint(threads=1, protocol="plain")).endswith(" / plain")
    old = {"cpu_model": "AMD EPYC", "ep": "cpu", "threads": 1, "batch_size": 1, "precision": "fp32", "repeats": 3}
    assert device_name(old) == "AMD EPYC / cpu / 1t / b1 fp32 / R3"  # names of stored devices do not change



GENOA = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
stepping\t: 1
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512_vnni sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7742 64-Core Processor
flags\t\t: fpu sse sse2
"""

# the first version's id formula, written out: old fingerprints must keep the id they were stored with
OLD_ID_FIELDS = ("cpu_model", "cpu_count", "gpu_name", "gpu_driver", "ort_version", "ep", "ep_options",
                 "threads", "batch_size", "precision", "machine")
OLD = {"cpu_model": "AMD EPYC", "cpu_count": 2, "machine": "x86_64", "gpu_name": None, "gpu_driver": None,
       "ort_version": "1.17.0", "ep": "cpu", "ep_options": {}, "threads": 1, "batch_size": 1,
       "precision": "fp32", "repeats": 1, "hostname": "a", "python": "3.11.7"}


def _old_id(fp):
    key = {k: fp.get(k) for k in OLD_ID_FIELDS}
    if (fp.get("repeats") or 1) != 1:
        key["repeats"] = int(fp["repeats"])
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _new(**kw):
    return {**OLD, "cpu_vendor": "AuthenticAMD", "cpu_family": 25, "cpu_model_number": 17, "cpu_stepping": 1,
            "cpu_flags": ["avx", "avx2", "avx512f", "fma"], "cpu_caches": {"L1d": "32K", "L2": "1024K", "L3": "32768K"},
            "cpu_visible_cores": 2, "gpu_compute_capability": None, "gpu_clocks": None, "protocol": "canary", **kw}


def test_parse_cpuinfo_reads_the_first_cpu_only():
    assert parse_cpuinfo(GENOA) == {"cpu_model": "AMD EPYC 9654 96-Core Processor", "cpu_vendor": "AuthenticAMD",
                                    "cpu_family": 25, "cpu_model_number": 17, "cpu_stepping": 1,
                                    "cpu_flags": ["avx", "avx2", "avx512_vnni", "avx512f", "f16c", "fma", "sse4_2"]}
    arm = parse_cpuinfo(ARM + "CPU revision\t: 1\n")
    assert arm["cpu_model"] is None and arm["cpu_stepping"] == "r1p1"


def test_fingerprint_reads_cpuinfo_and_tolerates_its_absence(tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(GENOA)
    monkeypatch.setattr(fpmod, "CPUINFO_PATH", str(tmp_path / "cpuinfo"))
    fpmod.read_cpuinfo.cache_clear()
    try:
        fp = device_fingerprint()
        assert (fp["cpu_model"], fp["cpu_family"], fp["cpu_model_number"]) == ("AMD EPYC 9654 96-Core Processor", 25, 17)
        assert "avx512f" in fp["cpu_flags"] and fp["cpu_visible_cores"] >= 1 and fp["protocol"] == "canary"
        assert device_name(fp).startswith("AMD EPYC 9654 96-Core Processor (fam 25 model 17, avx512) / cpu / 1t")
        (tmp_path / "cpuinfo").write_text(ARM)
        fpmod.read_cpuinfo.cache_clear()
        assert "(part 0xd40, sve2) / cpu" in device_name(device_fingerprint())
        monkeypatch.setattr(fpmod, "CPUINFO_PATH", str(tmp_path / "absent"))  # macOS / Windows
        fpmod.read_cpuinfo.cache_clear()
        fp = device_fingerprint()
        assert fp["cpu_model"] and fp["cpu_family"] is None and fp["cpu_flags"] is None
        assert missing_identity(fp) == []  # looked for, not there: not an old fingerprint
    finally:
        fpmod.read_cpuinfo.cache_clear()


def test_cpu_caches_from_sysfs(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"),
                                             (3, "Unified", "107520K")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, v in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(f"{v}\n")
    assert cpu_caches(tmp_path) == {"L1d": "48K", "L2": "2048K", "L3": "107520K"}
    assert cpu_caches(tmp_path / "none") is None


def test_protocol_enters_the_id_and_is_checked():
    a = device_fingerprint()
    assert device_fingerprint(protocol="plain")["device_id"] != a["device_id"]
    assert device_name(device_fingerprint(protocol="plain", repeats=3)).endswith(" / R3 / plain")
    with pytest.raises(ValueError):
        device_fingerprint(protocol="canry")


def test_every_new_hardware_field_enters_the_id():
    a = _new()
    assert device_id(a) != _old_id(a)
    for change in ({"cpu_family": 23}, {"cpu_model_number": 1}, {"cpu_stepping": 2}, {"cpu_flags": ["avx", "avx2"]},
                   {"cpu_caches": {"L1d": "32K", "L2": "512K", "L3": "32768K"}}, {"cpu_visible_cores": 1},
                   {"cpu_vendor": "GenuineIntel"}, {"gpu_compute_capability": "9.0"},
                   {"gpu_clocks": {"sm_mhz": 1980, "mem_mhz": 3201}}, {"protocol": "plain"}):
        assert device_id({**a, **change}) != device_id(a), change
    assert device_id({**a, "hostname": "elsewhere", "python": "3.12"}) == device_id(a)


def test_old_fingerprints_keep_their_id_and_name():
    assert device_id(OLD) == _old_id(OLD)
    assert device_id({**OLD, "repeats": 3}) == _old_id({**OLD, "repeats": 3})
    assert device_id({**OLD, "protocol": None, "cpu_flags": None}) == _old_id(OLD)  # None counts as absent
    assert device_name(OLD) == "AMD EPYC / cpu / 1t / b1 fp32"


def test_missing_identity_old_new_gpu_imported():
    assert missing_identity(_new()) == []
    lacks = missing_identity(OLD)
    assert "cpu_family" in lacks and "cpu_caches" in lacks and not any(k.startswith("gpu") for k in lacks)
    gpu_old = {**OLD, "ep": "cuda", "gpu_name": "NVIDIA H200", "gpu_driver": "550"}
    assert "gpu_compute_capability" in missing_identity(gpu_old) and "gpu_name" not in missing_identity(gpu_old)
    assert missing_identity({"device_id": "x", "name": "phone", "imported": True}) == ["hardware (imported data: only a name)"]
    assert set(missing_identity({})) == {k for k in IDENTITY_FIELDS if not k.startswith("gpu")}


def test_hardware_diff_lists_missing_fields_and_ignores_settings():
    a, b = _new(), _new(cpu_model_number=1, cpu_flags=["avx", "avx2", "fma"], threads=4, protocol="plain")
    assert hardware_diff(a, b) == [("cpu_model_number", 17, 1), ("cpu_flags", a["cpu_flags"], b["cpu_flags"])]
    d = {k: (x, y) for k, x, y in hardware_diff(OLD, a)}
    assert d["cpu_family"] == (None, 25) and "cpu_model" not in d


def test_describe_side_by_side_marks_differences():
    a, b = _new(), _new(cpu_family=23, cpu_flags=["avx", "avx2", "fma"], threads=2)
    lines = describe_side_by_side(a, b).splitlines()
    assert "theirs" in lines[0] and "this machine" in lines[0]
    row = {ln[2:].split()[0]: ln for ln in lines[1:]}
    assert row["cpu_family"].startswith("*") and "25" in row["cpu_family"] and "23" in row["cpu_family"]
    assert "avx512f (+3 common)" in row["cpu_flags"]  # only what one side has
    assert row["threads"].startswith("*") and row["cpu_model"].startswith(" ")  # same, but always shown
    assert "cpu_stepping" not in row and "gpu_name" not in row  # same and minor / empty on both sides
    old = describe_side_by_side(OLD, a)
    assert "* cpu_family" in old and " repeats " not in old  # absent repeats means 1
