import pytest

from continual_adapters.core.errors import ConfigError
from continual_adapters.metrics.scoring import check_metric, score


def test_classification_scores_hand_computed():
    # 4 of 6 right; class 0: P=2/3 R=2/3 F1=2/3; class 1: P=2/3 R=2/3 F1=2/3
    result = score("classification", [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx(2 / 3)
    # MCC = (TP*TN - FP*FN) / sqrt(...) = (2*2 - 1*1) / sqrt(3*3*3*3) = 3/9
    assert result["mcc"] == pytest.approx(1 / 3)


def test_regression_scores():
    result = score("regression", [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0])
    assert result["pearson"] == pytest.approx(1.0)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["mse"] == pytest.approx((1 + 4 + 9 + 16) / 4)


def test_constant_predictions_do_not_crash():
    assert score("regression", [1.0, 2.0], [3.0, 3.0])["pearson"] == 0.0


def test_metric_must_fit_head():
    assert check_metric("classification", "mcc") == "mcc"
    with pytest.raises(ConfigError):
        check_metric("regression", "accuracy")
