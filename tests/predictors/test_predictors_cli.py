"""``hwnas predictor train|eval|predict|show`` end to end, on a real SQLite store and a CSV."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hwnas.cli.main import main
from hwnas.predictors import load_predictor
from hwnas.profiling.store import LatencyStore
from tests.predictors.conftest import additive_latency, distinct_archs

FP = {"cpu_model": "Test CPU", "cpu_count": 2, "machine": "x86_64", "gpu_name": None, "gpu_driver": None,
      "ort_version": "1.0", "ep": "cpu", "ep_options": {}, "threads": 1, "batch_size": 1, "precision": "fp32",
      "device_id": "abcdef123456"}


def run(capsys, *args):
    """Run the real ``hwnas`` entry point; (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _row(space, arch, ms):
    return {"space": space, "arch": str(arch), "batch": 1, "resolution": 16, "precision": "fp32", "ep": "cpu",
            "ep_used": "cpu", "status": "ok", "median_ms": float(ms), "runs": 10, "warmup": 2}


@pytest.fixture(scope="module")
def store_db(micro_data, tmp_path_factory):
    """A real latency store: 240 micro archs, one device, and a per-layer table."""
    d = micro_data
    path = tmp_path_factory.mktemp("db") / "latency.db"
    with LatencyStore(path) as store:
        dev = store.add_device(dict(FP), name="test-cpu")
        for a, y in zip(d["archs"], d["y"]):
            store.add_row(dev, _row("micro", a, y))
        for (layer, op, ch), ms in d["table"].items():
            store.add_layer_row(dev, {"space": "micro", "layer": layer, "op": op, "in_channels": ch, "batch": 1,
                                      "resolution": 16, "precision": "fp32", "ep": "cpu", "status": "ok",
                                      "median_ms": ms, "runs": 10})
    return path


def _write_csv(path, archs, ys, device_id="abcdef123456"):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["space", "arch", "latency_ms", "device_id", "device_name"])
        for a, y in zip(archs, ys):
            w.writerow(["micro", str(a), repr(float(y)), device_id, "test-cpu"])
    return path


def test_train_eval_predict_show_from_db(store_db, tmp_path, capsys, micro_data):
    out = tmp_path / "p.hwp"
    code, stdout, err = run(capsys, "predictor", "train", "--db", str(store_db), "--model", "ridge",
                            "--out", str(out), "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert (rep["model"], rep["space"], rep["n_train"], rep["n_test"]) == ("ridge", "micro", 192, 48)
    assert rep["test_metrics"]["within_10"] > 0.9 and rep["device_id"] == FP["device_id"]
    p = load_predictor(out)
    assert p.fingerprint["cpu_model"] == "Test CPU" and p.device_name == "test-cpu" and p.n_train_ == 192
    assert p.metrics_["heldout"]["within_10"] == rep["test_metrics"]["within_10"]

    code, stdout, err = run(capsys, "predictor", "eval", str(out), "--db", str(store_db), "--json")
    assert code == 0, err
    ev = json.loads(stdout)
    assert ev["metrics"]["n"] == 240 and ev["metrics"]["within_10"] > 0.9

    archs = [str(a) for a in micro_data["archs"][:2]]
    code, stdout, err = run(capsys, "predictor", "predict", str(out), "--arch", archs[0], "--arch", archs[1], "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["arch"] for r in rows] == archs
    np.testing.assert_allclose([r["latency_ms"] for r in rows], p.predict(archs))

    code, stdout, _ = run(capsys, "predictor", "show", str(out))
    assert code == 0 and "ridge predictor for space micro" in stdout and "test-cpu" in stdout


def test_lut_from_db_layer_table(store_db, tmp_path, capsys):
    out = tmp_path / "lut.hwp"
    code, stdout, err = run(capsys, "predictor", "train", "--db", str(store_db), "--model", "lut",
                            "--out", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["test_metrics"]["within_10"] >= 0.95
    code, _, err = run(capsys, "predictor", "train", "--csv", str(_write_csv(tmp_path / "a.csv", ["k3_e1_w0.5-k3_e1_w0.5-skip"] * 3, [1, 1, 1])),
                       "--space", "micro", "--model", "lut", "--out", str(tmp_path / "x.hwp"))
    assert code == 2 and "needs" in err


def test_lut_missing_key_is_an_error_not_zero(micro_data):
    from hwnas.errors import PredictorError
    from hwnas.predictors import create_predictor

    d = micro_data
    table = dict(d["table"])
    a = d["archs"][0]
    from tests.predictors.conftest import layer_keys

    key = layer_keys(d["space"], a)[1][0]
    del table[key]
    p = create_predictor("lut", d["space"], table=table)
    with pytest.raises(PredictorError, match=rf"layer={key[0]}, op='{key[1]}', in_channels={key[2]}"):
        p.fit(d["archs"], d["y"])


@pytest.mark.slow
def test_train_auto_from_csv_and_eval_device_check(tmp_path, capsys, micro_space):
    archs = distinct_archs(micro_space, 60, seed=5)
    y, _ = additive_latency(micro_space, archs)
    path = _write_csv(tmp_path / "lat.csv", archs, y)
    out = tmp_path / "auto.hwp"
    cands = ["additive", "ridge", "ridge:raw", "xgb", "hybrid"]
    code, stdout, err = run(capsys, "predictor", "train", "--csv", str(path), "--space", "micro", "--model", "auto",
                            "--folds", "3", "--candidates", ",".join(cands), "--out", str(out), "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep["candidate"] in cands and list(rep["cv"]) == cands
    best = max(v["within_10"] for v in rep["cv"].values())
    bar = best - next(v["within_10_se"] for v in rep["cv"].values() if v["within_10"] == best)
    assert rep["cv"][rep["candidate"]]["within_10"] >= bar  # within one standard error of the best
    assert 0 <= rep["test_metrics"]["in_80"] <= 1 and 0 <= rep["test_metrics"]["in_95"] <= 1
    other = _write_csv(tmp_path / "other.csv", archs, y, device_id="999999999999")
    code, _, err = run(capsys, "predictor", "eval", str(out), "--csv", str(other))
    assert code == 2 and "another device" in err and "--force" in err
    code, stdout, err = run(capsys, "predictor", "eval", str(out), "--csv", str(other), "--force", "--json")
    assert code == 0 and json.loads(stdout)["metrics"]["n"] == 60


def test_adapt_predict_std_and_eval_png(store_db, tmp_path, capsys, micro_data, micro_space):
    """A predictor of the store's device, adapted to a "new device" (2.5x slower) from 15 archs."""
    base = tmp_path / "base.hwp"
    code, _, err = run(capsys, "predictor", "train", "--db", str(store_db), "--model", "ridge", "--out", str(base))
    assert code == 0, err
    d = micro_data
    new_csv = _write_csv(tmp_path / "new.csv", d["archs"][:15], 2.5 * d["y"][:15], device_id="0123456789ab")
    adapted = tmp_path / "adapted.hwp"
    code, stdout, err = run(capsys, "predictor", "adapt", str(base), "--csv", str(new_csv), "--out", str(adapted),
                            "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep["n_target"] == 15 and rep["device_id"] == "0123456789ab" and rep["loo_metrics"]["within_10"] > 0.8
    test_csv = _write_csv(tmp_path / "test.csv", d["archs"][15:], 2.5 * d["y"][15:], device_id="0123456789ab")
    png = tmp_path / "scatter.png"
    code, stdout, err = run(capsys, "predictor", "eval", str(adapted), "--csv", str(test_csv), "--png", str(png))
    assert code == 0, err
    assert "within 10%" in stdout and "inside the 80% interval" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arch = str(d["archs"][20])
    code, stdout, err = run(capsys, "predictor", "predict", str(adapted), "--arch", arch, "--std", "--p-below", "1.0",
                            "--json")
    assert code == 0, err
    row = json.loads(stdout)[0]
    assert row["interval80_ms"][0] < row["latency_ms"] < row["interval80_ms"][1] and row["std_ms"] > 0
    assert 0 < row["p_below"] < 1
    code, stdout, _ = run(capsys, "predictor", "show", str(adapted))
    assert code == 0 and "adapted from a predictor of another device" in stdout
    # bad input: another space's base, too few archs, a NaN latency; nothing is written
    tiny_base = tmp_path / "tiny.hwp"
    from hwnas.predictors import create_predictor
    from hwnas.space import get_space

    tiny = get_space("tiny")
    t_archs = distinct_archs(tiny, 30, seed=1)
    t_y, _ = additive_latency(tiny, t_archs)
    create_predictor("ridge", tiny).fit(t_archs, t_y).save(tiny_base)
    bad_out = tmp_path / "never.hwp"
    code, _, err = run(capsys, "predictor", "adapt", str(tiny_base), "--csv", str(new_csv), "--out", str(bad_out))
    assert code == 2 and "space" in err
    two = _write_csv(tmp_path / "two.csv", d["archs"][:2], d["y"][:2])
    code, _, err = run(capsys, "predictor", "adapt", str(base), "--csv", str(two), "--out", str(bad_out))
    assert code == 2 and "at least 3" in err
    nan = tmp_path / "nan.csv"
    nan.write_text("arch,latency_ms\n" + "".join(f"{a},{'nan' if i == 0 else 1.0}\n" for i, a in enumerate(d["archs"][:5])))
    code, _, err = run(capsys, "predictor", "adapt", str(base), "--csv", str(nan), "--out", str(bad_out))
    assert code == 2 and "finite and > 0" in err
    assert not bad_out.exists()
    code, _, err = run(capsys, "predictor", "train", "--db", str(store_db), "--model", "auto", "--candidates", "nope",
                       "--out", str(bad_out))
    assert code == 2 and "unknown auto candidate 'nope'" in err and not bad_out.exists()


def test_bad_inputs_are_clear_errors(tmp_path, capsys, micro_space, store_db):
    good = "k3_e1_w0.5-k3_e1_w0.5-skip"
    cases = {
        "nan.csv": ([good, "k5_e3-k3_e1-skip"], ["nan", "1.0"], "finite and > 0"),
        "neg.csv": ([good, "k5_e3-k3_e1-skip"], ["-1", "1.0"], "finite and > 0"),
        "space.csv": (["k3_e2-k3_e2-k3_e2-k3_e2-k3_e2-k3_e2"], ["1.0"], "bad arch for space 'micro'"),
        "empty.csv": ([], [], "has no data rows"),
    }
    for name, (archs, ys, msg) in cases.items():
        p = tmp_path / name
        with open(p, "w") as f:
            f.write("arch,latency_ms\n" + "".join(f"{a},{y}\n" for a, y in zip(archs, ys)))
        code, _, err = run(capsys, "predictor", "train", "--csv", str(p), "--space", "micro", "--out", str(tmp_path / "x.hwp"))
        assert code == 2 and msg in err, (name, err)
    small = _write_csv(tmp_path / "small.csv", distinct_archs(micro_space, 4, seed=1), [1.0, 2.0, 3.0, 4.0])
    code, _, err = run(capsys, "predictor", "train", "--csv", str(small), "--space", "micro", "--out", str(tmp_path / "x.hwp"))
    assert code == 2 and "too little data" in err
    code, _, err = run(capsys, "predictor", "train", "--csv", str(_write_csv(tmp_path / "ten.csv", distinct_archs(micro_space, 10, seed=2), np.linspace(1, 2, 10))),
                       "--space", "micro", "--model", "auto", "--folds", "20", "--out", str(tmp_path / "x.hwp"))
    assert code == 2 and "20-fold" in err
    code, _, err = run(capsys, "predictor", "train", "--db", str(store_db), "--model", "magic", "--out", str(tmp_path / "x.hwp"))
    assert code == 2 and "unknown predictor 'magic'; valid:" in err
    code, _, err = run(capsys, "predictor", "train", "--db", str(tmp_path / "none.db"), "--space", "micro", "--out", str(tmp_path / "x.hwp"))
    assert code == 2 and "not found" in err
    empty_db = tmp_path / "empty.db"
    LatencyStore(empty_db).close()
    code, _, err = run(capsys, "predictor", "train", "--db", str(empty_db), "--space", "micro", "--out", str(tmp_path / "x.hwp"))
    assert code == 2 and "no measurements" in err
    code, _, err = run(capsys, "predictor", "eval", str(tmp_path / "missing.hwp"), "--db", str(store_db))
    assert code == 2 and "no predictor file" in err
    (tmp_path / "junk.hwp").write_text("not a zip")
    code, _, err = run(capsys, "predictor", "predict", str(tmp_path / "junk.hwp"), "--arch", good)
    assert code == 2 and "not a hwnas predictor file" in err
