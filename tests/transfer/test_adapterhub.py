"""AdapterHub export: file names, key names, shapes and config fields of adapters' Houlsby layout."""

import json

import pytest
import torch
from safetensors.torch import load_file

from continual_adapters.core.config import AdapterConfig, TaskSpec, TrainConfig
from continual_adapters.core.errors import ConfigError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.files.bundle import bundle_bytes, parse_bundle
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from continual_adapters.transfer.adapterhub import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    HEAD_CONFIG,
    HEAD_WEIGHTS,
    LAYER_NORMS,
    adapterhub_tensors,
    export_adapterhub,
    head_config,
    houlsby_config,
    reduction_factor,
)
from tests.support.cli import cli_ok
from tests.support.tiny import tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_encoder_dir):
    root = tmp_path_factory.mktemp("adapterhub")
    words = (("pos", "good"), ("neg", "bad"), ("meh", "so-so"))
    rows = [{"text": f"{w} film {i}", "label": label} for label, w in words for i in range(8)]
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    registry = Registry(root / "registry.db")
    Runner(registry, encoder=tiny_encoder_dir, progress=False).add_task(
        "films",
        DataSpec(train=str(train), validation=str(train)),
        AdapterConfig(bottleneck=8),
        TrainConfig(epochs=1, batch_size=8),
    )
    result = export_adapterhub(registry, "films", root / "out")
    config, tensors = parse_bundle(registry.bundle_path("films").read_bytes())
    return {
        "root": root,
        "url": str(root / "registry.db"),
        "result": result,
        "folder": root / "out",
        "tensors": tensors,
        "labels": config["task"]["labels"],
    }


def test_files_are_adapterhub_names_and_safetensors_only(exported):
    names = sorted(p.name for p in exported["folder"].iterdir())
    assert names == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_CONFIG, HEAD_WEIGHTS, LAYER_NORMS])
    assert ADAPTER_WEIGHTS == "adapter.safetensors" and HEAD_WEIGHTS == "model_head.safetensors"
    assert set(exported["result"].files) == set(names)


def test_adapter_keys_shapes_and_values(exported):
    weights = load_file(exported["folder"] / ADAPTER_WEIGHTS)
    expected = {}
    for layer in range(2):
        for where in ("attention.output", "output"):
            stem = f"bert.encoder.layer.{layer}.{where}.adapters.films"
            expected.update(
                {
                    f"{stem}.adapter_down.0.weight": (8, 32),
                    f"{stem}.adapter_down.0.bias": (8,),
                    f"{stem}.adapter_up.weight": (32, 8),
                    f"{stem}.adapter_up.bias": (32,),
                }
            )
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    ours = exported["tensors"]
    assert torch.equal(
        weights["bert.encoder.layer.0.attention.output.adapters.films.adapter_down.0.weight"],
        ours["adapters.0.down.weight"],
    )
    assert torch.equal(
        weights["bert.encoder.layer.1.output.adapters.films.adapter_up.bias"], ours["adapters.3.up.bias"]
    )


def test_head_and_layer_norm_files(exported):
    head = load_file(exported["folder"] / HEAD_WEIGHTS)
    assert {k: tuple(v.shape) for k, v in head.items()} == {"heads.films.1.weight": (3, 32), "heads.films.1.bias": (3,)}
    assert torch.equal(head["heads.films.1.weight"], exported["tensors"]["head.out.weight"])
    norms = load_file(exported["folder"] / LAYER_NORMS)
    assert torch.equal(
        norms["bert.encoder.layer.1.attention.output.LayerNorm.weight"], exported["tensors"]["norms.2.weight"]
    )
    assert len(norms) == 2 * 2 * 2


def test_adapter_config_is_houlsby(exported):
    saved = json.loads((exported["folder"] / ADAPTER_CONFIG).read_text())
    assert (saved["name"], saved["model_type"], saved["model_class"], saved["hidden_size"]) == (
        "films",
        "bert",
        "BertAdapterModel",
        32,
    )
    assert saved["version"].startswith("adapters.")
    c = saved["config"]
    assert c["reduction_factor"] == 4 and 32 // c["reduction_factor"] == 8
    assert (c["mh_adapter"], c["output_adapter"], c["original_ln_before"], c["original_ln_after"]) == (
        True,
        True,
        False,
        True,
    )
    assert (c["residual_before_ln"], c["ln_before"], c["ln_after"], c["is_parallel"], c["scaling"]) == (
        True,
        False,
        False,
        False,
        1.0,
    )
    assert (c["non_linearity"], c["init_weights"], c["phm_layer"], c["use_gating"]) == ("gelu", "houlsby", False, False)
    assert saved["cadapt"]["exact"] == {"adapter": True, "head": False, "layer_norms": False}


def test_head_config(exported):
    saved = json.loads((exported["folder"] / HEAD_CONFIG).read_text())
    c = saved["config"]
    assert (c["head_type"], c["layers"], c["num_labels"], c["use_pooler"]) == ("classification", 1, 3, False)
    assert c["label2id"] == {label: i for i, label in enumerate(exported["labels"])}
    assert any("CLS" in note for note in exported["result"].notes)


def test_cls_pooling_regression_and_activation_mapping():
    model = tiny_model()
    model.add_task(
        TaskSpec("score", head="regression", pooling="cls", adapter=AdapterConfig(bottleneck=64, activation="identity"))
    )
    config, tensors = parse_bundle(bundle_bytes(model, "score"))
    spec = TaskSpec.from_dict(config["task"])
    assert houlsby_config(spec, 32)["reduction_factor"] == 0.5
    assert houlsby_config(spec, 32)["non_linearity"] == "linear"
    assert head_config(spec)["num_labels"] == 1 and head_config(spec)["label2id"] is None
    groups = adapterhub_tensors(config, tensors, "score")
    assert sum(t.numel() for g in groups.values() for t in g.values()) == sum(t.numel() for t in tensors.values())


@pytest.mark.parametrize(
    "hidden,bottleneck,factor",
    [(384, 64, 6), (384, 256, 1.5), (32, 64, 0.5), (32, 5, 6.3999999999999995), (768, 7, 109.71428571428571)],
)
def test_reduction_factor_gives_the_bottleneck_back_through_json(hidden, bottleneck, factor):
    stored = json.loads(json.dumps({"reduction_factor": reduction_factor(hidden, bottleneck)}))["reduction_factor"]
    assert stored == factor and int(hidden // stored) == bottleneck


def test_layer_norm_only_task_is_refused():
    with pytest.raises(ConfigError):
        reduction_factor(384, 0)


def test_cli_adapterhub_export(exported, tmp_path):
    out = json.loads(
        cli_ok(
            "--registry", exported["url"], "export", "films", "--format", "adapterhub", "-o", tmp_path / "hub", "--json"
        ).output
    )
    assert out["format"] == "adapterhub" and (tmp_path / "hub" / ADAPTER_WEIGHTS).is_file()
    assert out["files"] == exported["result"].files
