"""`cadapt add-task --method ewc|replay|lwf|lora` on real data with the real default encoder: two tasks
each, the second proving (lora) or recording (the shared-encoder methods) what happened to the first,
and `cadapt report` showing what each method keeps."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import cli_ok

#: Small real subsets: enough to run every code path with the real encoder, not to learn the tasks.
SMALL = ["--max-train", "48", "--max-eval", "32", "--epochs", "1", "--max-length", "48", "--quiet", "--json"]


@pytest.mark.parametrize(
    "method, options",
    [
        ("lora", ["--lora-rank", "8", "--lr", "1e-3"]),
        ("ewc", ["--ewc-lambda", "100"]),
        ("replay", ["--replay-size", "20"]),
        ("lwf", ["--lwf-temperature", "2", "--lwf-weight", "0.5"]),
    ],
)
def test_two_real_tasks_per_method(tmp_path, data_dir, method, options):
    registry = ["--registry", str(tmp_path / "registry.db")]
    results = []
    for name in ("sst2", "trec"):
        out = cli_ok(*registry, "add-task", name, "--data", data_dir / name, "--method", method, *SMALL, *options)
        results.append(json.loads(out.stdout))
    first, second = results
    assert 0 <= first["scores"]["accuracy"] <= 1 and second["position"] == first["position"] + 1
    assert second["unchanged"] is (method == "lora"), "lora proves sst2 untouched; shared encoders change it"
    assert second["confirmation"] == ("probe" if method == "lora" else "full")
    counts = second["param_counts"]
    if method == "lora":
        assert counts["lora"] == 8 * (384 + 384) * 2 * 6 and counts["encoder"] == 0
    else:
        assert counts["encoder"] == 0 and counts["trained"] > 20_000_000
    report = json.loads(cli_ok(*registry, "report", "--json").stdout)
    assert [t["name"] for t in report["tasks"]] == ["sst2", "trec"]
    kept = {"ewc": {"fisher"}, "replay": {"replay"}}.get(method, set())
    assert set(report["method_state"]["kinds"]) == kept
    if method == "replay":
        assert report["method_state"]["replay"]["examples"] == 20 and report["method_state"]["replay"]["seen"] == 96
    audit = cli_ok(*registry, "audit", "--json") if method == "lora" else None
    if audit is not None:
        assert json.loads(audit.stdout)["ok"] is True
