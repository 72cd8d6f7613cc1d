"""Continual-learning metrics checked against numbers worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from continual_adapters.core.errors import ConfigError
from continual_adapters.metrics.continual import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    intransigence,
    learning_accuracy,
    summarize,
)

# Frozen per-task adapters: earlier tasks never change, upper triangle never measured.
ADAPTERS_3 = [
    [0.9, None, None],
    [0.9, 0.8, None],
    [0.9, 0.8, 0.7],
]

# Naive sequential fine-tuning: every earlier task drops by 0.4 by the end.
NAIVE_3 = [
    [0.90, 0.20, 0.10],
    [0.60, 0.80, 0.15],
    [0.50, 0.40, 0.70],
]

# Tasks 0 and 1 first improve after later tasks, then fall: the best earlier score is not
# the diagonal, so forgetting and -BWT disagree.
RISE_AND_FALL_4 = [
    [0.70, None, None, None],
    [0.80, 0.60, None, None],
    [0.75, 0.65, 0.90, None],
    [0.72, 0.50, 0.85, 0.88],
]

# Fully measured matrix for forward transfer.
FULL_4 = [
    [0.80, 0.55, 0.40, 0.35],
    [0.78, 0.85, 0.60, 0.45],
    [0.76, 0.83, 0.90, 0.70],
    [0.75, 0.82, 0.88, 0.95],
]
RANDOM_BASELINE_4 = [0.50, 0.50, 0.33, 0.25]


def test_adapters_have_no_forgetting():
    # ACC = (0.9 + 0.8 + 0.7) / 3 = 0.8
    assert average_accuracy(ADAPTERS_3) == pytest.approx(0.8)
    # BWT = ((0.9 - 0.9) + (0.8 - 0.8)) / 2 = 0, exactly: the same floats are subtracted
    assert backward_transfer(ADAPTERS_3) == 0.0
    # f_0 = max(0.9, 0.9) - 0.9 = 0; f_1 = max(0.8) - 0.8 = 0 (R[0][1] missing, skipped)
    assert forgetting_per_task(ADAPTERS_3) == [0.0, 0.0]
    assert forgetting(ADAPTERS_3) == 0.0
    # diagonal (0.9 + 0.8 + 0.7) / 3 = 0.8
    assert learning_accuracy(ADAPTERS_3) == pytest.approx(0.8)
    # R[0][1] and R[1][2] were never measured
    assert forward_transfer(ADAPTERS_3, [0.5, 0.5, 0.5]) is None


def test_naive_finetuning_forgets():
    # ACC = (0.5 + 0.4 + 0.7) / 3 = 0.5333...
    assert average_accuracy(NAIVE_3) == pytest.approx(1.6 / 3)
    # BWT = ((0.5 - 0.9) + (0.4 - 0.8)) / 2 = -0.4
    assert backward_transfer(NAIVE_3) == pytest.approx(-0.4)
    # f_0 = max(0.9, 0.6) - 0.5 = 0.4; f_1 = max(0.2, 0.8) - 0.4 = 0.4
    assert forgetting_per_task(NAIVE_3) == pytest.approx([0.4, 0.4])
    assert forgetting(NAIVE_3) == pytest.approx(0.4)
    # FWT with b = 0.1 everywhere: ((0.20 - 0.1) + (0.15 - 0.1)) / 2 = 0.075
    assert forward_transfer(NAIVE_3, [0.1, 0.1, 0.1]) == pytest.approx(0.075)


def test_forgetting_uses_best_earlier_score_not_diagonal():
    # ACC = (0.72 + 0.50 + 0.85 + 0.88) / 4 = 2.95 / 4 = 0.7375
    assert average_accuracy(RISE_AND_FALL_4) == pytest.approx(0.7375)
    # BWT = ((0.72 - 0.70) + (0.50 - 0.60) + (0.85 - 0.90)) / 3 = -0.13 / 3 = -0.04333...
    assert backward_transfer(RISE_AND_FALL_4) == pytest.approx(-0.13 / 3)
    # f_0 = max(0.70, 0.80, 0.75) - 0.72 = 0.08
    # f_1 = max(0.60, 0.65) - 0.50 = 0.15
    # f_2 = max(0.90) - 0.85 = 0.05
    assert forgetting_per_task(RISE_AND_FALL_4) == pytest.approx([0.08, 0.15, 0.05])
    # mean = 0.28 / 3 = 0.09333..., not -BWT = 0.04333...
    assert forgetting(RISE_AND_FALL_4) == pytest.approx(0.28 / 3)
    assert forgetting(RISE_AND_FALL_4) != pytest.approx(-backward_transfer(RISE_AND_FALL_4))
    # diagonal (0.70 + 0.60 + 0.90 + 0.88) / 4 = 3.08 / 4 = 0.77
    assert learning_accuracy(RISE_AND_FALL_4) == pytest.approx(0.77)


def test_forward_transfer_with_baseline_and_full_matrix():
    # FWT = ((0.55 - 0.50) + (0.60 - 0.33) + (0.70 - 0.25)) / 3 = 0.77 / 3 = 0.25667
    assert forward_transfer(FULL_4, RANDOM_BASELINE_4) == pytest.approx(0.77 / 3)
    # BWT = ((0.75 - 0.80) + (0.82 - 0.85) + (0.88 - 0.90)) / 3 = -0.1 / 3
    assert backward_transfer(FULL_4) == pytest.approx(-0.1 / 3)
    # ACC = (0.75 + 0.82 + 0.88 + 0.95) / 4 = 0.85
    assert average_accuracy(FULL_4) == pytest.approx(0.85)
    # numpy input with NaN behaves like lists with None
    as_arrays = forward_transfer(np.array(FULL_4), np.array(RANDOM_BASELINE_4))
    assert as_arrays == pytest.approx(0.77 / 3)


def test_forward_transfer_undefined_cases():
    one_gap = [row[:] for row in FULL_4]
    one_gap[1][2] = None
    assert forward_transfer(one_gap, RANDOM_BASELINE_4) is None
    nan_gap = np.array(FULL_4)
    nan_gap[2, 3] = np.nan
    assert forward_transfer(nan_gap, RANDOM_BASELINE_4) is None
    assert forward_transfer(FULL_4, None) is None
    assert forward_transfer(FULL_4, [0.5, None, 0.33, 0.25]) is None


def test_intransigence_against_reference():
    # a* = [0.75, 0.70, 0.92, 0.90], diagonal [0.70, 0.60, 0.90, 0.88]
    # I = (0.05 + 0.10 + 0.02 + 0.02) / 4 = 0.19 / 4 = 0.0475
    reference = [0.75, 0.70, 0.92, 0.90]
    assert intransigence(RISE_AND_FALL_4, reference) == pytest.approx(0.0475)
    assert intransigence(RISE_AND_FALL_4, None) is None
    # reference missing for task 1: (0.05 + 0.02 + 0.02) / 3 = 0.03
    assert intransigence(RISE_AND_FALL_4, [0.75, None, 0.92, 0.90]) == pytest.approx(0.03)


def test_single_task():
    R = [[0.9]]
    assert average_accuracy(R) == pytest.approx(0.9)
    assert learning_accuracy(R) == pytest.approx(0.9)
    assert backward_transfer(R) is None
    assert forward_transfer(R, [0.5]) is None
    assert forgetting(R) is None
    assert forgetting_per_task(R) == []
    # 1.0 - 0.9 = 0.1
    assert intransigence(R, [1.0]) == pytest.approx(0.1)


def test_missing_cells_are_skipped_not_fatal():
    R = [
        [0.9, None, None],
        [0.9, 0.8, None],
        [None, 0.6, 0.7],
    ]
    # ACC over the measured final cells: (0.6 + 0.7) / 2 = 0.65
    assert average_accuracy(R) == pytest.approx(0.65)
    # BWT skips task 0 (final cell missing): (0.6 - 0.8) / 1 = -0.2
    assert backward_transfer(R) == pytest.approx(-0.2)
    # f_0 undefined; f_1 = max(0.8) - 0.6 = 0.2
    per_task = forgetting_per_task(R)
    assert per_task[0] is None and per_task[1] == pytest.approx(0.2)
    assert forgetting(R) == pytest.approx(0.2)

    nothing_final = [[0.9, None], [None, None]]
    assert average_accuracy(nothing_final) is None
    assert backward_transfer(nothing_final) is None
    assert forgetting(nothing_final) is None
    assert learning_accuracy(nothing_final) == pytest.approx(0.9)


def test_summarize_keys_and_values():
    summary = summarize(NAIVE_3, baseline=[0.1, 0.1, 0.1], reference=[1.0, 1.0, 1.0])
    assert set(summary) == {"acc", "bwt", "fwt", "forgetting", "intransigence", "learning_accuracy"}
    assert summary["bwt"] == pytest.approx(-0.4)
    assert summary["fwt"] == pytest.approx(0.075)
    # I = ((1 - 0.9) + (1 - 0.8) + (1 - 0.7)) / 3 = 0.2
    assert summary["intransigence"] == pytest.approx(0.2)
    plain = summarize(ADAPTERS_3)
    assert plain["fwt"] is None and plain["intransigence"] is None
    assert all(v is None or math.isfinite(v) for v in plain.values())


@pytest.mark.parametrize(
    "R",
    [
        [],
        [[0.1, 0.2], [0.3]],
        [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
        np.zeros((2, 3)),
        [0.1, 0.2],
        [["high", 0.2], [0.3, 0.4]],
    ],
    ids=["empty", "ragged", "not-square", "numpy-not-square", "one-dimensional", "text-cell"],
)
def test_malformed_matrix_raises(R):
    with pytest.raises(ConfigError):
        summarize(R)


def test_wrong_length_vectors_raise():
    with pytest.raises(ConfigError):
        forward_transfer(FULL_4, [0.5, 0.5, 0.5])
    with pytest.raises(ConfigError):
        intransigence(FULL_4, [1.0] * 5)
