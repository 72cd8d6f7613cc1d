"""bench/serve.py in its quick mode (tiny random encoder, 1 and 2 tasks, 2 s each): it must run and
report every setting without an error, not be fast; no timing is asserted. Its section of a
Markdown file is replaced on each run, and nothing else in the file is touched."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from tests.support.paths import ROOT


def _load_serve_doc():
    """bench/serve_doc.py, a script's sibling module, loaded by its path (bench/ is no package)."""
    spec = importlib.util.spec_from_file_location("cadapt_bench_serve_doc", ROOT / "bench" / "serve_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve_doc = _load_serve_doc()
BEGIN, END, HEADING = serve_doc.BEGIN, serve_doc.END, serve_doc.HEADING


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
            "--doc",
            str(tmp_path / "performance.md"),
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
    doc = (tmp_path / "performance.md").read_text()
    assert doc.count(HEADING) == 1 and doc.count(BEGIN) == 1 and doc.count(END) == 1
    assert "| 2 | per-task |" in doc and "claim nothing" in doc


def result_of(rows_per_s: float) -> dict:
    rows = [
        {"setting": s, "tasks": t, "rows_per_s": rows_per_s, "p50_ms": 10.0, "p99_ms": 20.0, "requests": 5, "errors": 0}
        for s in ("batched", "unbatched")
        for t in (1, 40)
    ]
    return {
        "command": "bench/serve.py",
        "date": "2025-01-01",
        "cpus": 2,
        "threads": 2,
        "load_average": (1.0, 1.0, 1.0),
        "load_average_end": (2.0, 1.0, 1.0),
        "versions": {"torch": "t", "transformers": "x"},
        "clients": 16,
        "seconds": 30.0,
        "registry_note": "a synthetic registry",
        "out": "bench/results/serve.json",
        "rows": rows,
        "skipped": {40: "40 processes > --max-processes 16"},
        "goals": ["at 40 tasks: ..."],
        "quick": False,
    }


def test_the_generated_section_is_replaced_and_the_rest_of_the_file_kept(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nearlier text\n")
    serve_doc.write_section(doc, serve_doc.section(result_of(100.0)))
    first = doc.read_text()
    assert (
        first.startswith("# Performance\n\nearlier text\n") and HEADING in first and "| 40 | batched | 100.0 |" in first
    )
    assert "per-task at 40 tasks: not run" in first and "claim nothing" not in first
    doc.write_text(first + "\nanalysis a person wrote\n")
    serve_doc.write_section(doc, serve_doc.section(result_of(250.0)))
    second = doc.read_text()
    assert "| 40 | batched | 250.0 |" in second and "| 40 | batched | 100.0 |" not in second
    assert second.count(HEADING) == 1 and second.endswith("\nanalysis a person wrote\n")


def test_the_repositorys_performance_doc_has_the_section_the_benchmark_replaces():
    doc = (ROOT / "docs" / "performance.md").read_text()
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1 and doc.index(HEADING) < doc.index(BEGIN) < doc.index(END)
