"""Figures: each writes a real, non-trivial PNG; bad shapes raise ConfigError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from continual_adapters.core.errors import ConfigError
from continual_adapters.metrics.ledger import growth_ledger
from continual_adapters.report.plots import (
    METHOD_COLOURS,
    plot_accuracy_matrix,
    plot_method_comparison,
    plot_parameter_growth,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["sst2", "mnli", "qnli", "rte"]
ADAPTER_R = [
    [0.91, None, None, None],
    [0.91, 0.83, None, None],
    [0.91, 0.83, 0.90, None],
    [0.91, 0.83, 0.90, 0.68],
]
BASE = 22_713_216


def ledger(method: str, total: int):
    return growth_ledger(BASE, [dict(name=n, method=method, head=770, total=total) for n in NAMES])


def assert_real_png(path: Path) -> None:
    import matplotlib.image

    assert path.exists()
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    pixels = matplotlib.image.imread(path)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 20


def test_accuracy_matrix(tmp_path):
    out = plot_accuracy_matrix(NAMES, ADAPTER_R, tmp_path / "nested" / "matrix.png", metric_label="accuracy")
    assert out == tmp_path / "nested" / "matrix.png"
    assert_real_png(out)


def test_accuracy_matrix_accepts_numpy_and_str_path(tmp_path):
    R = np.array([[0.9, np.nan], [0.8, 0.7]])
    out = plot_accuracy_matrix(["a", "b"], R, str(tmp_path / "m.png"))
    assert_real_png(out)


def test_accuracy_matrix_shape_mismatch(tmp_path):
    with pytest.raises(ConfigError):
        plot_accuracy_matrix(NAMES[:3], ADAPTER_R, tmp_path / "bad.png")


def test_parameter_growth_single_and_many(tmp_path):
    adapters = ledger("adapters", 400_000)
    single = plot_parameter_growth(adapters, tmp_path / "growth_single.png")
    assert_real_png(single)
    many = plot_parameter_growth(
        {"adapters": adapters, "top-2 layers": ledger("top-k", 3_500_000)},
        tmp_path / "growth.png",
        title="Growth",
    )
    assert_real_png(many)


def test_parameter_growth_needs_rows(tmp_path):
    with pytest.raises(ConfigError):
        plot_parameter_growth([], tmp_path / "empty.png")


def test_method_comparison(tmp_path):
    scores = {
        "adapters": [0.91, 0.83, 0.90, 0.68],
        "naive": [0.55, 0.61, 0.74, 0.69],
        "full per task": [0.93, 0.84, 0.91, None],
    }
    out = plot_method_comparison(scores, NAMES, tmp_path / "methods.png")
    assert_real_png(out)


ELEVEN = [f"method {k}" for k in range(11)]  # a full comparison's count (docs/results.md)


def drawn_colours(path: Path) -> set[tuple[int, int, int]]:
    import matplotlib.image

    pixels = (matplotlib.image.imread(path)[..., :3] * 255).round().astype(int)
    return {tuple(c) for c in np.unique(pixels.reshape(-1, 3), axis=0)}


def rgb(colour: str) -> tuple[int, int, int]:
    from matplotlib.colors import to_rgb

    return tuple(round(255 * c) for c in to_rgb(colour))


def test_eleven_methods_are_drawn_in_eleven_colours(tmp_path):
    growth = plot_parameter_growth(
        {m: ledger("adapters", 400_000 * (k + 1)) for k, m in enumerate(ELEVEN)}, tmp_path / "g.png"
    )
    bars = plot_method_comparison({m: [0.5 + k / 40] * 4 for k, m in enumerate(ELEVEN)}, NAMES, tmp_path / "b.png")
    wanted = {rgb(c) for c in METHOD_COLOURS[:11]}
    assert len(wanted) == 11
    assert wanted <= drawn_colours(growth) and wanted <= drawn_colours(bars)


def test_method_comparison_stays_a_page_wide_with_many_methods_and_tasks(tmp_path):
    import matplotlib.image

    tasks = [f"task {j}" for j in range(14)]
    out = plot_method_comparison({m: [0.5] * 14 for m in ELEVEN}, tasks, tmp_path / "wide.png")
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width < 17 * 150 and height < width  # 16 inches at 150 dpi, plus the tight bounding box


def test_method_comparison_length_mismatch(tmp_path):
    with pytest.raises(ConfigError):
        plot_method_comparison({"adapters": [0.9, 0.8]}, NAMES, tmp_path / "bad.png")


def test_import_does_not_load_matplotlib():
    code = "import sys, continual_adapters.report.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_end_labels_are_spread_apart_in_order():
    from continual_adapters.report.plots import spread_labels

    values = [2.25, 1.0, 1.22, 1.01]
    placed = spread_labels(values, 0.4)
    assert placed == pytest.approx([2.25, 1.0, 1.8, 1.4])
    ranked = sorted(placed)
    assert all(b - a >= 0.4 - 1e-12 for a, b in zip(ranked, ranked[1:], strict=False))
    assert spread_labels([1.0, 5.0], 0.4) == [1.0, 5.0]  # labels far apart stay on their lines
