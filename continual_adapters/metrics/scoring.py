"""Per-task scores from scikit-learn and scipy, so no metric here is hand-written.

Classification always reports accuracy, macro-F1 and Matthews correlation (the GLUE metric for
CoLA); regression reports Pearson, Spearman and MSE (STS-B). Which one is a task's primary
score, the one that goes into the accuracy matrix R, is chosen per task.

scikit-learn and scipy are imported inside `score` only: the metric names and checks here are
needed by every command that reads a task's data spec (down to `cadapt tasks`), and loading
those libraries costs seconds that a command computing no score should not pay.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from continual_adapters.core.errors import ConfigError

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman", "mse")


def check_metric(head: str, metric: str) -> str:
    allowed = REGRESSION_METRICS if head == "regression" else CLASSIFICATION_METRICS
    if metric not in allowed:
        raise ConfigError(f"metric {metric!r} does not fit a {head} head; choose one of {', '.join(allowed)}")
    return metric


def default_metric(head: str) -> str:
    return "pearson" if head == "regression" else "accuracy"


def score(head: str, y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if head == "regression":
        constant = np.all(y_pred == y_pred[0]) or np.all(y_true == y_true[0])
        return {
            "pearson": 0.0 if constant else float(pearsonr(y_true, y_pred).statistic),
            "spearman": 0.0 if constant else float(spearmanr(y_true, y_pred).statistic),
            "mse": float(mean_squared_error(y_true, y_pred)),
        }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }


def higher_is_better(metric: str) -> bool:
    return metric != "mse"
