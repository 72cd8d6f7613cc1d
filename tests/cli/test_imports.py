"""Commands that only read the registry must not load the model's libraries.

`cadapt tasks` on a registry is a database query; importing torch, transformers or scikit-learn
for it costs seconds per call. Each check runs in a fresh interpreter (this test process has long
imported all of them), builds a registry with the registry API alone, runs the commands through
`CliRunner` and reports which heavy modules ended up in `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support.paths import ROOT

HEAVY = ("torch", "transformers", "sklearn", "scipy", "matplotlib")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    from click.testing import CliRunner

    from continual_adapters.cli import cli
    from continual_adapters.registry import BundleDraft, EvaluationDraft, Registry

    root = Path(sys.argv[1])
    url = str(root / "registry.db")
    registry = Registry(url)
    registry.init()
    data = {
        "spec": {"train": str(root / "train.jsonl"), "test": str(root / "test.jsonl")},
        "eval_split": "test",
        "splits": {"train": {"kind": "file", "path": str(root / "train.jsonl")}},
        "sizes": {"train": 10, "test": 4},
    }
    registry.begin_task(
        "sentiment", labels=["neg", "pos"], head="classification", primary_metric="accuracy", data=data
    )
    rel, sha, size = registry.write_file("sentiment", os.urandom(64))
    bundle = BundleDraft(
        path=rel,
        sha256=sha,
        size_bytes=size,
        config={"adapter_size": 8},
        param_counts={"adapter": 6, "layer_norm": 2, "head": 2, "total": 10, "bytes": 40, "base": 1000},
        hyperparameters={"lr": 1e-3},
        seed=7,
        library_versions={},
        git_commit="abc123",
        wall_time_s=1.5,
    )
    hashes = {"base_sha256": "0" * 64, "bundle_files": {}}
    proof = {"before": hashes, "after": hashes, "unchanged": True}
    registry.finish_task("sentiment", bundle, [EvaluationDraft("sentiment", "test", "accuracy", 0.75)], proof)
    results = {}
    for args in (["tasks"], ["show", "sentiment"], ["report"], ["fsck"], ["--help"], ["export", "--help"],
                 ["import", "--help"], ["tasks", "--json"]):
        result = CliRunner().invoke(cli, ["--registry", url, *args])
        error = repr(result.exception) if result.exit_code else None
        results[" ".join(args)] = {"exit_code": result.exit_code, "output": result.output, "error": error}
    loaded = {name: name in sys.modules for name in HEAVY}
    print(json.dumps({"results": results, "loaded": loaded}))
    """
)


def test_read_only_commands_import_no_model_library(tmp_path):
    script = f"HEAVY = {HEAVY!r}\n{SCRIPT}"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert {args: r["exit_code"] for args, r in results.items()} == dict.fromkeys(results, 0), results
    assert report["loaded"] == dict.fromkeys(HEAVY, False)
    assert "sentiment" in results["tasks"]["output"] and "0.7500" in results["tasks"]["output"]
    assert [row["name"] for row in json.loads(results["tasks --json"]["output"])] == ["sentiment"]
    assert results["show sentiment"]["output"].startswith("task sentiment (#1, ready, adapters, classification)")
    assert "sentiment" in results["report"]["output"]
    assert results["fsck"]["output"].rstrip().endswith("ok")
    assert "add-task" in results["--help"]["output"] and "--output" in results["export --help"]["output"]
