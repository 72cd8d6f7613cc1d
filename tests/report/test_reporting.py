"""`cadapt report` on the real three-task stream: Markdown, JSON and readable PNG figures."""

import json

import matplotlib.image

from tests.support.cli import cli_ok


def test_report_markdown_json_and_plots(stream, tmp_path):
    out = cli_ok("--registry", stream["url"], "report", "--plots", tmp_path / "plots", "-o", tmp_path / "r.md").output
    assert "## Accuracy matrix R[i][j]" in out and "| BWT | 0.0000 |" in out
    assert (tmp_path / "r.md").read_text() == out.rstrip("\n") + "\n"
    data = json.loads(cli_ok("--registry", stream["url"], "report", "--json").output)
    assert data["matrix"]["tasks"] == ["sst2", "trec", "tweeteval_emotion"]
    assert data["metrics"]["bwt"] == 0.0 and data["metrics"]["forgetting"] == 0.0
    ledger = data["ledger"]
    assert [row["task"] for row in ledger] == ["sst2", "trec", "tweeteval_emotion"]
    assert 1.0 < ledger[-1]["cumulative_multiple"] < 1.1 and ledger[-1]["full_finetune_multiple"] > 2.9
    for name in ("accuracy_matrix.png", "parameter_growth.png"):
        path = tmp_path / "plots" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
        pixels = matplotlib.image.imread(path).reshape(-1, 4)
        assert len({tuple(p) for p in pixels[::7]}) > 20
