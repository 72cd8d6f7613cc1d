"""Figures for the results document: accuracy matrix, parameter growth, method comparison.

matplotlib is imported inside each function and switched to the Agg backend there, so
importing this module costs nothing and works on headless machines (CI, GPU boxes).
Every function writes a 150 dpi PNG, creating parent folders, and returns its path.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path

import numpy as np

from continual_adapters.core.errors import ConfigError
from continual_adapters.metrics.ledger import LedgerRow

_DPI = 150
# Red is kept for the "one full model per task" reference line, so no method is drawn in it.
# Twelve colours and markers, so the eleven methods of a full comparison never share a style.
METHOD_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "tab:gray",
    "navy",
    "gold",
    "black",
)
METHOD_MARKERS = "s^Dvp*hXP<>d"
#: The widest a bar chart grows (inches): past it bars get thinner, not the page wider.
_MAX_WIDTH = 16.0
#: Above this many methods per task group the bars are too thin for their value labels.
_LABELLED_METHODS = 4


def _pyplot():
    """Lazy import: the Agg backend must be chosen before pyplot is first imported."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Write and close, so long report runs do not accumulate open figures."""
    plt = _pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(out, dpi=_DPI, format="png", bbox_inches="tight")
    plt.close(fig)
    return out


def _scores(values: Sequence, what: str) -> np.ndarray:
    """None means "not measured"; NaN lets matplotlib leave that cell or bar empty."""
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must hold numbers or None") from exc


def plot_accuracy_matrix(
    task_names: Sequence[str],
    R,
    path: str | Path,
    title: str = "Accuracy matrix R[i][j]",
    metric_label: str = "score",
) -> Path:
    """Heatmap of R, the matrix every continual-learning metric is read from (GEM, 2017).

    Rows are "after training task i", columns "evaluated on task j"; unmeasured cells stay
    blank on a light-grey background so an empty upper triangle reads as "not measured",
    not as a score of zero.
    """
    plt = _pyplot()
    size = len(task_names)
    rows = list(R)
    if len(rows) != size or any(len(row) != size for row in rows):
        raise ConfigError(f"R must be {size} x {size} to match {size} task names")
    matrix = np.array([_scores(row, "R") for row in rows])
    masked = np.ma.masked_invalid(matrix)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")

    side = max(4.5, 1.1 * size + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(masked, cmap=cmap, aspect="equal")
    middle = (np.nanmin(matrix) + np.nanmax(matrix)) / 2 if masked.count() else 0.0
    for i in range(size):
        for j in range(size):
            if not np.isnan(matrix[i, j]):
                colour = "black" if matrix[i, j] > middle else "white"
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color=colour)

    ax.set_xticks(range(size), labels=list(task_names), rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(size), labels=list(task_names))
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=metric_label)
    return _save(fig, path)


def plot_parameter_growth(
    rows: Sequence[LedgerRow] | Mapping[str, Sequence[LedgerRow]],
    path: str | Path,
    title: str = "Stored parameters as tasks are added",
) -> Path:
    """Total stored parameters against task count, the comparison of Houlsby et al. 2019.

    A plain list is one method, labelled by its rows' method; a dict maps a label to each
    method's ledger. The "one full model per task" line comes from the longest ledger's
    ``full_finetune_multiple``. Every line starts at 0 tasks = 1.0 x (the base model alone).
    """
    plt = _pyplot()
    series = dict(rows) if isinstance(rows, Mapping) else {_label(rows): list(rows)}
    if not series or not any(series.values()):
        raise ConfigError("parameter-growth plot needs at least one ledger row")
    longest = max(series.values(), key=len)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = [1.0] + [row.full_finetune_multiple for row in longest]
    ends = [_growth_line(ax, full, "one full model per task", "o", "--", "tab:red")]
    styles = cycle(zip(METHOD_MARKERS, METHOD_COLOURS, strict=True))
    for (label, ledger), (marker, colour) in zip(series.items(), styles, strict=False):
        multiples = [1.0] + [row.cumulative_multiple for row in ledger]
        ends.append(_growth_line(ax, multiples, label, marker, "-", colour))

    ax.set_xticks(range(len(longest) + 1))
    ax.set_xlim(-0.2, len(longest) + 0.9)
    ax.set_ylim(bottom=0)
    heights = spread_labels([y for _, y, _ in ends], 0.05 * ax.get_ylim()[1])
    for (x, y, colour), y_text in zip(ends, heights, strict=True):
        ax.annotate(f"{y:.2f}×", (x, y), xytext=(x + 0.15, y_text), textcoords="data", va="center", color=colour)
    ax.set_xlabel("number of tasks learned")
    ax.set_ylabel("total stored parameters (× base model)")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper left")
    return _save(fig, path)


def _label(rows: Sequence[LedgerRow]) -> str:
    """A single ledger is named after its method, or "mixed" when its rows disagree."""
    methods = {row.method for row in rows}
    return methods.pop() if len(methods) == 1 else "mixed"


def _growth_line(ax, multiples, label, marker, style, colour) -> tuple[float, float, str]:
    """Plot one ledger; returns where its final multiple is to be printed."""
    ax.plot(range(len(multiples)), multiples, marker=marker, linestyle=style, label=label, color=colour)
    return len(multiples) - 1, multiples[-1], colour


def spread_labels(values: Sequence[float], gap: float) -> list[float]:
    """Label heights at least `gap` apart, in the values' order, so end labels of lines that
    finish close together (1.00x, 1.01x, 1.22x) stay readable instead of printing over each other."""
    placed, floor = [0.0] * len(values), float("-inf")
    for i in sorted(range(len(values)), key=lambda k: values[k]):
        placed[i] = floor = max(values[i], floor + gap)
    return placed


def plot_method_comparison(
    per_method_scores: Mapping[str, Sequence[float | None]],
    task_names: Sequence[str],
    path: str | Path,
    title: str = "Score per task and method",
    metric_label: str = "score",
) -> Path:
    """Grouped bars, one group per task, so a method's weak task stands out at a glance.

    Missing scores (None/NaN) leave a gap marked "n/a" rather than a zero-height bar, which
    would read as a measured score of zero.
    """
    plt = _pyplot()
    if not per_method_scores:
        raise ConfigError("method comparison needs at least one method")
    size = len(task_names)
    for method, scores in per_method_scores.items():
        if len(scores) != size:
            raise ConfigError(f"method {method!r} has {len(scores)} scores for {size} tasks")

    count = len(per_method_scores)
    width = 0.8 / count
    centres = np.arange(size)
    figsize = (min(_MAX_WIDTH, max(6.0, 1.3 * size * max(1, count / 2) + 2)), 4.8)
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    colours = cycle(METHOD_COLOURS)
    for k, (method, scores) in enumerate(per_method_scores.items()):
        values = _scores(scores, f"scores of {method!r}")
        bars_x = centres + (k - (count - 1) / 2) * width
        bars = ax.bar(bars_x, values, width, label=method, color=next(colours))
        if count <= _LABELLED_METHODS:
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in values], fontsize=7, padding=2)
        for x in bars_x[np.isnan(values)]:
            ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, color="dimgray")

    ax.set_xticks(centres, labels=[textwrap.fill(str(name), 14) for name in task_names])
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_xlabel("task")
    ax.set_ylabel(metric_label)
    ax.set_title(title)
    ax.margins(y=0.12)
    ax.grid(True, axis="y", alpha=0.4)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncol=min(count, 4), frameon=False)
    return _save(fig, path)
