"""Probe files from elsewhere: a crafted good file parses; every malformed or hostile one is refused
with a `BundleError` naming its source, before any of its values is used."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from continual_adapters.core.errors import BundleError
from continual_adapters.training.probe import PROBE_FORMAT, PROBE_FORMAT_VERSION, parse_probe


def craft(tensors: dict[str, torch.Tensor], **changes) -> bytes:
    content = {"format": PROBE_FORMAT, "format_version": PROBE_FORMAT_VERSION, "task": "t1", "device": "cpu"}
    content |= {"dtype": "float32", "pad_token_id": 0} | changes
    content = {k: v for k, v in content.items() if v is not ...}
    return st_save(tensors, metadata={"cadapt": json.dumps(content, sort_keys=True)})


def good_tensors() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[101, 2023, 102, 0], [101, 102, 0, 0]])
    return {
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "token_type_ids": torch.zeros_like(ids),
        "logits": torch.tensor([[0.5, -1.0], [2.0, 0.25]]),
    }


def with_(**changes) -> bytes:
    tensors = good_tensors() | {k: v for k, v in changes.items() if v is not None}
    return craft({k: v for k, v in tensors.items() if k not in {k for k, v in changes.items() if v is None}})


def raw(header: object, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def shifted_offsets() -> bytes:
    """Valid entries moved 8 bytes up, the data section grown by 8: a gap before the first tensor."""
    data = craft(good_tensors())
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    for key, entry in header.items():
        if key != "__metadata__":
            entry["data_offsets"] = [o + 8 for o in entry["data_offsets"]]
    return raw(header, bytes(8) + data[8 + length :])


def hostile() -> dict[str, bytes]:
    good = craft(good_tensors())
    ids = good_tensors()["input_ids"]
    nan = torch.tensor([[0.5, float("nan")], [2.0, 0.25]])
    return {
        "empty": b"",
        "not-safetensors": b"this is a text file, not a probe at all\n",
        "truncated-head": good[:6],
        "truncated-header": good[:40],
        "truncated-data": good[:-1],
        "trailing-bytes": good + b"\0" * 8,
        "huge-header-length": struct.pack("<Q", 1 << 40) + good[8:],
        "gap-before-data": shifted_offsets(),
        "header-not-object": raw([], b""),
        "duplicate-header-key": good.replace(b'"logits"', b'"input_ids"', 1),
        "wrong-key": craft(good_tensors() | {"input_idz": ids}),
        "missing-logits": with_(logits=None),
        "extra-tensor": craft(good_tensors() | {"labels": ids}),
        "float-ids": with_(input_ids=ids.float()),
        "int32-ids": with_(input_ids=ids.int()),
        "float64-logits": with_(logits=good_tensors()["logits"].double()),
        "nan-logits": with_(logits=nan),
        "inf-logits": with_(logits=nan.nan_to_num(nan=float("inf"))),
        "one-row": craft({k: v[:1] for k, v in good_tensors().items()}),
        "mask-shape": with_(attention_mask=torch.ones(2, 3, dtype=torch.long)),
        "types-shape": with_(token_type_ids=torch.zeros(3, 4, dtype=torch.long)),
        "logit-rows": with_(logits=torch.zeros(3, 2)),
        "one-d-logits": with_(logits=torch.zeros(2)),
        "no-classes": with_(logits=torch.zeros(2, 0)),
        "negative-id": with_(input_ids=ids - 200),
        "id-over-range": with_(input_ids=ids + (1 << 40)),
        "mask-not-binary": with_(attention_mask=2 * (ids != 0).long()),
        "row-attends-nothing": with_(attention_mask=torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])),
        "wrong-format": craft(good_tensors(), format="cadapt-bundle"),
        "wrong-version": craft(good_tensors(), format_version="2"),
        "missing-field": craft(good_tensors(), pad_token_id=...),
        "extra-field": craft(good_tensors(), rows=2),
        "bool-pad-id": craft(good_tensors(), pad_token_id=True),
        "string-pad-id": craft(good_tensors(), pad_token_id="0"),
        "negative-pad-id": craft(good_tensors(), pad_token_id=-1),
        "bad-task-name": craft(good_tensors(), task="../etc"),
        "numeric-task": craft(good_tensors(), task=7),
        "bad-dtype": craft(good_tensors(), dtype="float16"),
        "bad-device": craft(good_tensors(), device="cuda;rm"),
        "no-metadata": st_save(good_tensors()),
        "two-metadata-keys": st_save(good_tensors(), metadata={"cadapt": "{}", "other": "x"}),
        "metadata-not-json": st_save(good_tensors(), metadata={"cadapt": "{not json"}),
    }


def test_the_crafted_good_file_parses():
    probe = parse_probe(craft(good_tensors()), "good.safetensors")
    assert probe.rows == 2 and probe.logits.shape == (2, 2)


@pytest.mark.parametrize("name", sorted(hostile()))
def test_a_hostile_file_raises_bundle_error_naming_its_source(name):
    with pytest.raises(BundleError, match=r"^hostile/" + name):
        parse_probe(hostile()[name], f"hostile/{name}")
