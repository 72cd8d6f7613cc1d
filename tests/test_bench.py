"""The benchmark script (bench/bench.py) in its CI quick mode: it must run, not be fast.

No timing is asserted anywhere: these tests only keep the script from rotting (every setup
builds, steps and reports) and check the shape of its JSON and of its printed table.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("cadapt_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, *args):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--json", str(out), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def _check_shape(data, setups, stdout):
    bench = _bench_module()
    assert set(data) == {"meta", "setups", "goals", "table"}
    meta = data["meta"]
    assert meta["device"] in ("cpu", "cuda") and meta["model"] == "tiny" and meta["steps"] == 2
    assert {"torch", "transformers", "python"} <= set(meta["versions"])
    assert meta["load_before"] and meta["load_after"] and meta["device_name"]
    assert list(data["setups"]) == setups
    for name, entry in data["setups"].items():
        if name.startswith(("adapterhub", "peft")) and entry["status"] == "skipped":
            assert "not importable" in entry["reason"]  # optional peers skip cleanly
            continue
        assert entry["status"] == "ok", (name, entry.get("reason"))
        assert entry["median_ms"] > 0 and entry["tokens_per_s"] > 0 and entry["peak_mb"] > 0
        assert len(entry["rounds"]) == 1 and entry["rounds"][0]["versions"]["torch"]
        if name in bench.TRAIN_SETUPS or name in bench.INFER_SETUPS:
            assert len(entry["rounds"][0]["step_ms"]) == 2
    assert set(data["goals"]) >= {"train_vs_floor", "inference_vs_bare", "real_dynamic_vs_padded", "memory_vs_floor"}
    for row in data["goals"].values():
        assert set(row) >= {"goal", "value", "met"}
    assert data["table"] in stdout
    for name in setups:
        assert name in stdout
    assert "goals:" in stdout and "ms/step" in stdout


def test_quick_mode_runs_every_eager_setup(tmp_path, data_dir):
    bench = _bench_module()
    stdout, data = _run(tmp_path, "--no-compile", "--real-data-dir", str(data_dir))
    setups = [s for s in bench.ALL_SETUPS if s not in bench.COMPILED and s not in bench.PEER_ENV_SETUPS]
    _check_shape(data, setups, stdout)
    cadapt = data["setups"]["cadapt"]
    assert cadapt["fast_path"] is True and data["setups"]["cadapt_ref"]["fast_path"] is False
    assert cadapt["trainable"] > 0
    real = data["setups"]["real_dynamic"]
    assert real["pad_to_max_length"] is False and data["setups"]["real_padded"]["pad_to_max_length"] is True
    assert real["train_tokens"] == data["setups"]["real_padded"]["train_tokens"] > 0  # same real tokens


def test_quick_mode_compiled_setups(tmp_path):
    stdout, data = _run(tmp_path, "--setups", "floor_compiled,cadapt_compiled")
    _check_shape(data, ["floor_compiled", "cadapt_compiled"], stdout)
    assert data["setups"]["cadapt_compiled"]["compile_mode"] == "default"
    assert data["goals"]["train_compiled_vs_floor_compiled"]["value"] is not None


def test_table_and_goals_from_synthetic_results():
    bench = _bench_module()

    def ok(ms, tps=None, mem=100.0):
        return {"status": "ok", "median_ms": ms, "tokens_per_s": tps or 1000.0 / ms, "peak_mb": mem}

    runs = {
        "floor": [ok(10.0), ok(12.0)],
        "cadapt": [ok(10.4), ok(10.6)],
        "bare_infer": [ok(5.0, 200.0)],
        "cadapt_infer": [ok(5.1, 196.0)],
        "real_dynamic": [ok(1.0, 300.0)],
        "real_padded": [ok(1.0, 100.0)],
        "adapterhub": [{"status": "skipped", "reason": "adapters not importable: nope"}],
    }
    summary = bench.aggregate(runs)
    assert summary["floor"]["median_ms"] == 11.0 and summary["floor"]["round_medians_ms"] == [10.0, 12.0]
    assert summary["adapterhub"]["status"] == "skipped"
    goals = bench.goals(summary, "cpu")
    assert goals["train_vs_floor"]["value"] == pytest.approx(10.5 / 11.0) and goals["train_vs_floor"]["met"]
    assert goals["inference_vs_bare"]["value"] == pytest.approx(0.98) and goals["inference_vs_bare"]["met"]
    assert goals["real_dynamic_vs_padded"]["value"] == pytest.approx(3.0) and goals["real_dynamic_vs_padded"]["met"]
    assert goals["train_compiled_vs_floor_compiled"]["met"] is None
    meta = dict(
        device_name="cpu",
        model="tiny",
        batch=2,
        seq=16,
        dtype="fp32",
        bottleneck=8,
        rounds=2,
        steps=2,
        load_before="0.1",
        load_after="0.2",
    )
    table = bench.format_table(summary, goals, meta)
    assert "skipped" in table and "adapters not importable" in table and "MET" in table
    # On CUDA the training goal is against the compiled floor.
    assert bench.goals(summary, "cuda")["train_vs_floor"]["value"] is None
