"""The side-by-side comparison of a rebase (stream/rebase.py), as Markdown.

Every number comes from the two registries' rows (registration scores, bundle parameter counts
and training times), so a table rendered after a resumed run compares the kept tasks exactly
like the ones trained in it. Skipped tasks are rows of the table, with the reason, so a task the
new registry lacks is never missing without a word.
"""

from __future__ import annotations

from typing import Any

from continual_adapters.stream.rebase import SKIPPED, RebaseResult, RebaseRow


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _base(base: dict[str, Any] | None) -> str:
    if not base:
        return "none yet"
    return f"`{base['name']}` ({base['parameters']:,} parameters, {base['layers']} layers)"


def _status(row: RebaseRow) -> str:
    if row.status == SKIPPED:
        return f"skipped: {row.reason}"
    if row.same_data is False:
        return f"{row.status} (recorded data differs from the source's)"
    return row.status


def rebase_markdown(result: RebaseResult) -> str:
    """The comparison document: the two bases, one row per task in the source's stream order (score
    on the task's recorded evaluation split, parameters the task adds, training time), then what was
    skipped and why, and the tasks left out of this rebase."""
    lines = [
        "# Rebase",
        "",
        f"- source: `{result.source}`, base {_base(result.old_base)}",
        f"- target: `{result.target}`, base {_base(result.new_base)}",
        f"- this run: {len(result.names('rebased'))} retrained, {len(result.names('ready'))} already ready in "
        f"the target, {len(result.skipped)} skipped; {result.wall_time_s:.1f} s",
        "",
        "| # | task | metric (split) | old | new | Δ | params old | params new | train s old | train s new | status |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result.rows:
        lines.append(
            f"| {row.position} | {row.task} | {row.metric} ({row.eval_split}) | {_score(row.old_score)} | "
            f"{_score(row.new_score)} | {_signed(row.delta)} | {_count(row.old_params)} | {_count(row.new_params)} | "
            f"{_seconds(row.old_train_s)} | {_seconds(row.new_train_s)} | {_status(row)} |"
        )
    both = [row for row in result.rows if row.delta is not None]
    if both:
        mean_old = sum(r.old_score or 0.0 for r in both) / len(both)
        mean_new = sum(r.new_score or 0.0 for r in both) / len(both)
        lines += ["", f"Mean over the {len(both)} task(s) in both: old {mean_old:.4f}, new {mean_new:.4f}."]
    lines += [
        "",
        "Scores are each task's registration score on its recorded evaluation split; `params` is what the "
        "task adds to the base; `train s` is its recorded training time (every size tried, under "
        "`--adapter-size auto`).",
    ]
    if result.skipped:
        lines += ["", "Skipped (not in the target):", ""]
        lines += [f"- {name}: {reason}" for name, reason in result.skipped.items()]
    if result.excluded:
        lines += ["", f"Not selected (--tasks): {', '.join(result.excluded)}."]
    return "\n".join(lines) + "\n"
