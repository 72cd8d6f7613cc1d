"""The serving pieces without a server: settings, request parsing, routing confidence, metrics text."""

from __future__ import annotations

import pytest
import torch

from continual_adapters.core.errors import ConfigError, MalformedRequestError, RequestError, RequestTooLargeError
from continual_adapters.serve.config import ServeConfig
from continual_adapters.serve.metrics import Metrics
from continual_adapters.serve.protocol import ERROR_CODES, error_code, parse_reload, parse_request
from continual_adapters.stream.taskid import TaskIdentifier, label_statistics


@pytest.mark.parametrize(
    "settings",
    [
        {"max_batch": 0},
        {"max_queue": 0},
        {"max_wait_ms": -1.0},
        {"timeout_s": 0.0},
        {"poll_s": float("nan")},
        {"min_task_confidence": 1.5},
        {"token": "  "},
    ],
)
def test_bad_settings_are_refused(settings):
    with pytest.raises(ConfigError):
        ServeConfig(**settings)


def test_batching_is_off_when_it_cannot_merge():
    assert ServeConfig().merges
    assert not ServeConfig(batching=False).merges
    assert not ServeConfig(max_batch=1).merges and not ServeConfig(max_wait_ms=0.0).merges


def test_requests_parse_strictly():
    rows, top_k, logits = parse_request(
        b'{"inputs": ["plain", {"text": "a", "text_pair": "b", "task": "x"}], "task": "auto", "top_k": 2}', 8
    )
    assert [(r.text, r.pair, r.task) for r in rows] == [("plain", None, "auto"), ("a", "b", "x")]
    assert (top_k, logits) == (2, False)
    for body in (b"{", b"[]", b'{"inputs": [{"text": "a", "task": "x"}], "top_k": NaN}', b"\xff"):
        with pytest.raises(MalformedRequestError):
            parse_request(body, 8)
    for body in (b'{"inputs": [{"text": "a"}]}', b'{"inputs": [{"text": 3, "task": "x"}]}', b'{"inputs": [7]}'):
        with pytest.raises(RequestError) as caught:
            parse_request(body, 8)
        assert error_code(caught.value) == "invalid_input"
    with pytest.raises(RequestTooLargeError) as caught:
        parse_request(b'{"inputs": ["a", "b", "c"], "task": "x"}', 2)
    assert error_code(caught.value) == "too_many_rows" and ERROR_CODES["too_many_rows"][0] == 413
    assert parse_reload(b"") is True and parse_reload(b'{"verify": false}') is False
    with pytest.raises(RequestError):
        parse_reload(b'{"verify": "no"}')


def test_routing_confidence_is_the_posterior_of_the_chosen_task():
    torch.manual_seed(0)
    tasks = {}
    for k, name in enumerate(("a", "b", "c")):
        features = torch.nn.functional.normalize(torch.randn(40, 6) + 3 * torch.eye(6)[k], dim=-1)
        tasks[name] = label_statistics(features, [i % 2 for i in range(40)])
    identifier = TaskIdentifier(tasks)
    probes = torch.nn.functional.normalize(torch.randn(20, 6), dim=-1)
    names, confidence = identifier.identify(probes)
    assert names == identifier.predict(probes)
    scores = probes.double() @ identifier.weights.T + identifier.bias
    posterior = scores.softmax(-1)
    for row, (name, value) in enumerate(zip(names, confidence, strict=True)):
        mine = [i for i, owner in enumerate(identifier.owners) if owner == name]
        assert value == pytest.approx(float(posterior[row, mine].sum()))
    assert 0 < min(confidence) < 1


def test_metrics_text_is_cumulative_and_escaped():
    metrics = Metrics()
    metrics.request("/v1/predict", 200, 0.02)
    metrics.request("/v1/predict", 200, 3.0)
    metrics.answered(['we"ird', None], 0.02)
    metrics.batch(3, 2, 0.01)
    text = metrics.render()
    assert 'cadapt_request_seconds_bucket{le="0.025"} 1' in text
    assert 'cadapt_request_seconds_bucket{le="+Inf"} 2' in text and "cadapt_request_seconds_count 2" in text
    assert 'cadapt_rows_total{task="we\\"ird"} 1' in text and "cadapt_rows_no_task_total 1" in text
    assert 'cadapt_batch_rows_bucket{le="2"} 0' in text and 'cadapt_batch_rows_bucket{le="4"} 1' in text
