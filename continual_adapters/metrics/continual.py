"""Continual-learning metrics over an accuracy matrix.

``R`` is a T x T matrix (list of lists or numpy array): ``R[i][j]`` is the score on task
``j`` after training through task ``i`` (0-based). Cells that were not measured are
``None`` or NaN; with one frozen adapter per task the upper triangle (``j > i``) usually is.

| name          | formula (averaged over the tasks listed)  | source     | sign            |
|---------------|-------------------------------------------|------------|-----------------|
| ACC           | R[T-1][j], all j                          | GEM 2017   | higher better   |
| BWT           | R[T-1][j] - R[j][j], j < T-1              | GEM 2017   | < 0 forgetting  |
| FWT           | R[j-1][j] - b_j, j >= 1                   | GEM 2017   | > 0 transfer    |
| forgetting    | max_{l<T-1} R[l][j] - R[T-1][j], j < T-1  | RWalk 2018 | > 0 forgetting  |
| intransigence | a*_k - R[k][k], all k                     | RWalk 2018 | > 0 learns less |
| learning acc. | R[k][k], all k                            | MER 2019   | higher better   |

GEM 2017 is Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning";
RWalk 2018 is Chaudhry et al., "Riemannian Walk for Incremental Learning: Understanding
Forgetting and Intransigence"; MER 2019 is Riemer et al., "Learning to Learn without
Forgetting by Maximizing Transfer and Minimizing Interference". b is a randomly initialised
model's score per task, a* a reference model's (e.g. one fully fine-tuned per task).

Missing cells never raise: ACC, BWT, forgetting, intransigence and learning accuracy
average over the tasks whose cells are present, and return None when none are. FWT
returns None as soon as one cell it needs is missing, because a transfer estimate built
from a subset of tasks would silently change what the number means. Malformed input
(not square, ragged, non-numeric, baseline of the wrong length) raises ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from continual_adapters.core.errors import ConfigError

Matrix = Sequence[Sequence[float | None]] | np.ndarray
Vector = Sequence[float | None] | np.ndarray


def _as_float(value: float | None, what: str) -> float:
    """NaN stands for "not measured" so one ``isnan`` test covers both None and NaN."""
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a number or None, got {value!r}") from exc


def _matrix(R: Matrix) -> np.ndarray:
    """Validate R as a non-empty square matrix and return it as floats with NaN for gaps."""
    rows = list(R)
    size = len(rows)
    if size == 0:
        raise ConfigError("accuracy matrix is empty")
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise ConfigError(f"accuracy matrix row {i} is not a sequence: {row!r}")
        if len(row) != size:
            raise ConfigError(f"accuracy matrix must be square: row {i} has {len(row)} cells, expected {size}")
    try:  # numpy reads None as NaN; cell by cell took 0.2 s per metric at 200 tasks
        fast = np.array(rows, dtype=float)
    except (TypeError, ValueError):
        fast = None  # a cell that is not a number: found below, to name it
    if fast is not None and fast.shape == (size, size):
        return fast
    out = np.full((size, size), np.nan)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            out[i, j] = _as_float(value, f"R[{i}][{j}]")
    return out


def _vector(values: Vector, size: int, what: str) -> np.ndarray:
    """Per-task vectors (baseline, reference) must line up with the matrix's tasks."""
    items = list(values)
    if len(items) != size:
        raise ConfigError(f"{what} has {len(items)} entries, expected one per task ({size})")
    return np.array([_as_float(v, f"{what}[{k}]") for k, v in enumerate(items)])


def _mean(values: np.ndarray) -> float | None:
    """Average the measured entries only; None says "nothing to average" without crashing."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else None


def average_accuracy(R: Matrix) -> float | None:
    """ACC: how good the final model is on every task seen (GEM, Lopez-Paz & Ranzato 2017).

    Tasks whose final-row cell is missing are skipped; None if the whole row is missing.
    """
    r = _matrix(R)
    return _mean(r[-1])


def backward_transfer(R: Matrix) -> float | None:
    """BWT: how later training changed earlier tasks (GEM, Lopez-Paz & Ranzato 2017).

    Negative means forgetting. With frozen per-task adapters it is exactly 0.0, which is
    the property the toolkit is built to show. Tasks missing either cell are skipped;
    None when T < 2 or no task has both cells.
    """
    r = _matrix(R)
    size = len(r)
    if size < 2:
        return None
    diffs = np.array([r[-1, j] - r[j, j] for j in range(size - 1)])
    return _mean(diffs)


def forward_transfer(R: Matrix, baseline: Vector | None) -> float | None:
    """FWT: how much earlier tasks help a task before training on it (GEM, Lopez-Paz 2017).

    ``baseline[j]`` is a randomly initialised model's score on task j (one entry per task;
    ``baseline[0]`` is unused). Needs the upper-triangle cells ``R[j-1][j]``, which
    task-incremental adapter runs usually do not measure, so None is common: it is returned
    when T < 2, baseline is None, or any needed cell is missing.
    """
    r = _matrix(R)
    size = len(r)
    if baseline is None:
        return None
    b = _vector(baseline, size, "baseline")
    if size < 2:
        return None
    diffs = np.array([r[j - 1, j] - b[j] for j in range(1, size)])
    if np.isnan(diffs).any():
        return None
    return float(diffs.mean())


def forgetting_per_task(R: Matrix) -> list[float | None]:
    """f_j = max_{l<T-1} R[l][j] - R[T-1][j] for each j < T-1 (RWalk, Chaudhry et al. 2018).

    Unlike BWT this compares with the best score the task ever had, not the score right
    after training it, so a task that improved and then fell back still counts as forgotten.
    Returns T-1 entries (the last task cannot have been forgotten yet); an entry is None
    when the final cell or every earlier cell of that column is missing.
    """
    r = _matrix(R)
    size = len(r)
    out: list[float | None] = []
    for j in range(size - 1):
        earlier = r[: size - 1, j]
        earlier = earlier[~np.isnan(earlier)]
        if earlier.size == 0 or np.isnan(r[-1, j]):
            out.append(None)
        else:
            out.append(float(earlier.max() - r[-1, j]))
    return out


def forgetting(R: Matrix) -> float | None:
    """Average forgetting (RWalk, Chaudhry et al. 2018); positive means forgetting.

    None when T < 2 or no task's forgetting is defined.
    """
    per_task = [f for f in forgetting_per_task(R) if f is not None]
    return float(np.mean(per_task)) if per_task else None


def intransigence(R: Matrix, reference: Vector | None) -> float | None:
    """I_k = a*_k - R[k][k], averaged over tasks (RWalk, Chaudhry et al. 2018).

    ``reference[k]`` is what a model unconstrained by continual learning (for example a
    separately fully fine-tuned one) reaches on task k; a positive value means the method
    learns new tasks worse than that. Tasks missing either value are skipped; None when
    reference is None or no task has both.
    """
    r = _matrix(R)
    if reference is None:
        return None
    a_star = _vector(reference, len(r), "reference")
    return _mean(a_star - np.diag(r))


def learning_accuracy(R: Matrix) -> float | None:
    """Mean of the diagonal: each task's score just after learning it (Riemer et al. 2019, MER).

    Read beside ACC it separates "could not learn the task" from "learned it, then forgot":
    ACC = learning accuracy + (T-1)/T * BWT when every cell is present. Missing diagonal cells are
    skipped; None if the whole diagonal is missing.
    """
    return _mean(np.diag(_matrix(R)))


def summarize(R: Matrix, baseline: Vector | None = None, reference: Vector | None = None) -> dict[str, float | None]:
    """All metrics in one dict, None where a metric is undefined, for reports and JSON."""
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, baseline),
        "forgetting": forgetting(R),
        "intransigence": intransigence(R, reference),
        "learning_accuracy": learning_accuracy(R),
    }
