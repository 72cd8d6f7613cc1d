"""Parameter-growth ledger: what each new task costs to store, against the base model.

Houlsby et al. 2019 ("Parameter-Efficient Transfer Learning for NLP") make the case for
adapters with exactly this accounting: nine GLUE tasks at about 3.6% of BERT each leave
1.3x the base model in total, where one fully fine-tuned model per task needs 9x. The
ledger reproduces that arithmetic for any sequence of tasks so the claim can be checked
on our own runs.

The ledger trusts each task's ``total``: it is what must be stored for that task, already
computed by whoever trained it. For adapters that is the adapter, layer-norm and head
parameters; for method ``"full"`` it is a whole encoder copy plus head, for ``"top-k"`` or
``"naive"`` whatever those methods keep. Nothing here recomputes or second-guesses it, so
mixed methods stay comparable as long as each reports its real stored cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from continual_adapters.core.errors import ConfigError


@dataclass(frozen=True)
class LedgerRow:
    """One task's line: its own cost and the running totals after it (Houlsby et al. 2019).

    ``full_finetune_multiple`` is the comparison Houlsby et al. draw: after k tasks, one
    fully fine-tuned model per task costs sum_i (base + head_i) / base, i.e. about k x base.
    """

    task: str
    method: str
    adapter: int
    layer_norm: int
    head: int
    added: int
    added_bytes: int | None
    percent_of_base: float
    cumulative: int
    cumulative_multiple: float
    full_finetune_multiple: float


def _count(task: Mapping[str, object], key: str, default: int = 0) -> int:
    """Parameter counts come from JSON and configs, so reject anything not a whole number >= 0."""
    value = task.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        name = task.get("name")
        raise ConfigError(f"task {name!r}: {key} must be an integer >= 0, got {value!r}")
    return value


def _optional_count(task: Mapping[str, object], key: str) -> int | None:
    """A count that may be unknown: None when absent or None, else checked like `_count`."""
    return None if task.get(key) is None else _count(task, key)


def _check_base(base_params: int) -> None:
    """Every figure is a ratio to the base, so a zero or negative base would be meaningless."""
    if isinstance(base_params, bool) or not isinstance(base_params, int) or base_params <= 0:
        raise ConfigError(f"base_params must be a positive integer, got {base_params!r}")


def growth_ledger(base_params: int, tasks: Sequence[Mapping[str, object]]) -> list[LedgerRow]:
    """One row per task, in training order, with the running cost (Houlsby et al. 2019).

    Each task mapping has ``name`` (required), ``method`` (default ``"adapters"``),
    ``adapter``, ``layer_norm``, ``head`` (default 0), ``total`` (stored parameters; defaults
    to adapter + layer_norm + head) and ``bytes`` (stored size, default None). ``total`` is
    taken as given, see the module docstring.
    """
    _check_base(base_params)
    rows: list[LedgerRow] = []
    cumulative = base_params
    full_cost = 0
    for position, task in enumerate(tasks):
        if not isinstance(task, Mapping) or not task.get("name"):
            raise ConfigError(f"task {position} must be a mapping with a non-empty 'name'")
        adapter = _count(task, "adapter")
        layer_norm = _count(task, "layer_norm")
        head = _count(task, "head")
        added = _count(task, "total", adapter + layer_norm + head)
        cumulative += added
        full_cost += base_params + head
        rows.append(
            LedgerRow(
                task=str(task["name"]),
                method=str(task.get("method", "adapters")),
                adapter=adapter,
                layer_norm=layer_norm,
                head=head,
                added=added,
                added_bytes=_optional_count(task, "bytes"),
                percent_of_base=added / base_params * 100,
                cumulative=cumulative,
                cumulative_multiple=cumulative / base_params,
                full_finetune_multiple=full_cost / base_params,
            )
        )
    return rows


def ledger_totals(rows: Sequence[LedgerRow], base_params: int) -> dict[str, float | int | None]:
    """Headline numbers for a results table: Houlsby et al.'s "1.3x vs 9x" for our tasks.

    With no rows only the base model is stored, so both multiples are 1.0 and the mean
    percentage is None.
    """
    _check_base(base_params)
    total_added = sum(row.added for row in rows)
    percents = [row.percent_of_base for row in rows]
    return {
        "total_added": total_added,
        "total_multiple": (base_params + total_added) / base_params,
        "full_finetune_multiple": rows[-1].full_finetune_multiple if rows else 1.0,
        "mean_percent_per_task": sum(percents) / len(percents) if percents else None,
    }
