"""Bootstrap intervals: cases whose answer is known, and the binomial standard error they must match."""

import numpy as np
import pytest

from continual_adapters.metrics.bootstrap import average_accuracy_interval, difference_interval


def test_constant_correctness_has_a_point_interval():
    assert average_accuracy_interval([[1, 1, 1], [0, 0]]) == (0.5, 0.5)
    assert average_accuracy_interval([[True] * 4]) == (1.0, 1.0)


def test_one_task_matches_the_normal_approximation_of_a_binomial():
    """400 examples at 50%: the 95% interval is 0.5 +- 1.96 * sqrt(0.25 / 400) = 0.5 +- 0.049."""
    low, high = average_accuracy_interval([np.tile([0, 1], 200)], resamples=4000)
    assert low == pytest.approx(0.451, abs=0.01) and high == pytest.approx(0.549, abs=0.01)


def test_tasks_are_averaged_not_pooled():
    """A 10-example task counts as much as a 1000-example one: the mean of 0.0 and 1.0 is 0.5."""
    low, high = average_accuracy_interval([[0] * 10, [1] * 1000])
    assert low == high == 0.5


def test_more_tasks_narrow_the_interval():
    one = average_accuracy_interval([np.tile([0, 1], 50)])
    four = average_accuracy_interval([np.tile([0, 1], 50)] * 4)
    assert four[1] - four[0] < 0.7 * (one[1] - one[0])


def test_paired_difference_cancels_what_two_methods_share():
    rng = np.random.default_rng(0)
    shared = [rng.integers(0, 2, 300) for _ in range(3)]
    assert difference_interval(shared, shared) == (0.0, 0.0)
    better = [v.copy() for v in shared]
    better[0][:30] = 1  # right on task 0's first 30 examples, some of which were wrong
    low, high = difference_interval(better, shared)
    gain = (better[0].mean() - shared[0].mean()) / 3
    assert 0 < low <= gain <= high


def test_seeded_and_reproducible():
    data = [np.tile([0, 1, 1], 40)]
    assert average_accuracy_interval(data, seed=3) == average_accuracy_interval(data, seed=3)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        average_accuracy_interval([])
    with pytest.raises(ValueError, match="at least one"):
        average_accuracy_interval([[]])
    with pytest.raises(ValueError, match="0/1"):
        average_accuracy_interval([[0, 2]])
    with pytest.raises(ValueError, match="0/1"):
        average_accuracy_interval([[0.5, float("nan")]])
    assert average_accuracy_interval([[0.5, 0.5]]) == (0.5, 0.5), "a mean over seeds is accepted"
    with pytest.raises(ValueError, match="same test examples"):
        difference_interval([[0, 1]], [[0, 1, 1]])
