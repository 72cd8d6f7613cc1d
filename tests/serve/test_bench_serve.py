"""bench/serve.py in its quick mode (tiny random encoder, 1 and 2 tasks, 2 s each): it must run and
report every setting without an error, not be fast; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT


def test_quick_mode_measures_every_setting(tmp_path):
    out = tmp_path / "serve.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "serve.py"),
            "--quick",
            "--workdir",
            str(tmp_path / "w"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    got = {(row["setting"], row["tasks"]) for row in result["rows"]}
    assert got == {(s, t) for s in ("batched", "unbatched", "per-task") for t in (1, 2)}
    assert all(row["errors"] == 0 and row["requests"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in result["rows"])
    assert len(result["goals"]) == 2 and result["quick"] is True
    assert "rows/s" in proc.stdout and "per-task" in proc.stdout
