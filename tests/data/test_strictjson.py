"""The one JSON reader for untrusted files: what plain json.loads lets through, it refuses."""

import json

import pytest

from continual_adapters.data import strictjson


def test_reads_what_json_reads():
    text = '{"a": [1, 2.5, "x", null, true], "b": {"c": -3e2}}'
    assert strictjson.loads(text) == json.loads(text)
    assert strictjson.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"label": "pos", "label": "neg"}', "duplicate keys ['label']"),
        ('{"outer": {"k": 1, "k": 2}}', "duplicate keys ['k']"),
        ('{"score": NaN}', "NaN is not valid JSON"),
        ("[Infinity]", "Infinity is not valid JSON"),
        ('{"x": -Infinity}', "-Infinity is not valid JSON"),
    ],
)
def test_refuses_what_json_accepts(text, message):
    json.loads(text)  # plain json takes it
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        strictjson.loads(text)


def test_bad_utf8_and_deep_nesting_raise_for_the_caller_to_type():
    with pytest.raises(ValueError):
        strictjson.loads(b'{"a": "caf\xe9"}')
    with pytest.raises(RecursionError):
        strictjson.loads("[" * 200_000 + "]" * 200_000)
