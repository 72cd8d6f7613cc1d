"""Bootstrap intervals over test examples for the average accuracy of a stream, and for the
difference between two methods on the same examples.

Why these: the published continual-learning tables report one average accuracy per method; with
test sets of a few hundred examples per task, a one- or two-point gap can be noise. The interval
resamples each task's test examples with replacement (tasks stay fixed: the stream is given),
takes each task's accuracy and averages over tasks, as the headline metric does. The difference
is paired: both methods are resampled on the same example indices, so what they share cancels.
Pure functions of per-example correctness vectors (0/1, or their mean over seeds, which keeps
the pairing of the seeds), tested against cases whose answer is known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def _vectors(correct: Sequence[Sequence[bool] | np.ndarray]) -> list[np.ndarray]:
    vectors = [np.asarray(v, dtype=np.float64) for v in correct]
    if not vectors or any(v.ndim != 1 or v.size == 0 for v in vectors):
        raise ValueError("need at least one task, each with at least one test example")
    if any(((v < 0) | (v > 1) | np.isnan(v)).any() for v in vectors):
        raise ValueError("correctness vectors hold 0/1 (or its mean over seeds, in [0, 1]) only")
    return vectors


def _resampled_means(vectors: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """[resamples, tasks] per-task accuracies on resampled examples; task i always draws the same
    indices for a given seed, so two methods resampled with one seed are paired."""
    out = np.empty((resamples, len(vectors)))
    for i, v in enumerate(vectors):
        rng = np.random.default_rng([seed, i])
        out[:, i] = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    return out


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def average_accuracy_interval(
    correct: Sequence[Sequence[bool] | np.ndarray], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean over tasks of per-task accuracy."""
    vectors = _vectors(correct)
    return _interval(_resampled_means(vectors, resamples, seed).mean(axis=1), level)


def difference_interval(
    first: Sequence[Sequence[bool] | np.ndarray],
    second: Sequence[Sequence[bool] | np.ndarray],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired percentile interval of average accuracy(first) - average accuracy(second), both
    scored on the same tasks' same test examples (vectors of equal lengths, task by task)."""
    a, b = _vectors(first), _vectors(second)
    if [v.size for v in a] != [v.size for v in b]:
        raise ValueError("both methods must be scored on the same test examples of the same tasks")
    diff = _resampled_means(a, resamples, seed).mean(axis=1) - _resampled_means(b, resamples, seed).mean(axis=1)
    return _interval(diff, level)
