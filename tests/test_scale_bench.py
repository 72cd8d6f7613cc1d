"""bench/scale.py on a tiny encoder: it must run, resume and draw, not be fast.

No timing is asserted (speed goals live in the benchmark's own results): this keeps the script
from rotting and checks what it records per addition and per checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

SCRIPT = ROOT / "bench" / "scale.py"


def scale(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_grows_resumes_and_plots(tmp_path, tiny_encoder_dir):
    out, results = tmp_path / "run", tmp_path / "scale.json"
    common = ["--out", str(out), "--json", str(results), "--encoder", tiny_encoder_dir, "--checkpoints", "2"]
    common += ["--max-train", "16", "--max-eval", "8"]
    scale(tmp_path, "--tasks", "1", *common)
    scale(tmp_path, "--tasks", "2", *common)  # resumes: task 1 is not added again
    data = json.loads(results.read_text())
    assert [a["task"] for a in data["additions"]] == ["t001_cola", "t002_cr"]
    second = data["additions"][1]
    assert set(second["timings_s"]) == {"prepare", "train", "confirm", "register"}
    assert second["confirmation"] == "probe" and second["confirmed"] == 1 and second["peak_rss_mib"] > 0
    assert {"database", "bundles", "probes", "centroids"} <= set(second["disk_bytes"])
    assert [c["n"] for c in data["checkpoints"]] == [1, 2]
    assert set(data["checkpoints"][1]) == {"n", "tasks", "show", "report", "audit_probe", "predict_auto"}
    drawn = scale(tmp_path, "--plot", str(tmp_path / "figures"), str(results))
    assert (tmp_path / "figures" / "scale.png").stat().st_size > 0
    assert "| 2 | cr |" in drawn.stdout and "| N | tasks | show |" in drawn.stdout
