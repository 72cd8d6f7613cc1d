"""Export a task in the folder layout AdapterHub's `adapters` library loads with `load_adapter`.

Only the part whose mapping is exact is written in AdapterHub's own files: the Houlsby
("double_seq_bn") bottleneck weights, as ``adapter_config.json`` + ``adapter.safetensors``, and the
prediction head as ``head_config.json`` + ``model_head.safetensors`` (a one-layer classification
head). What AdapterHub's Houlsby config cannot express, the per-task LayerNorm copies, goes to a
side file AdapterHub ignores, ``cadapt_layer_norms.safetensors``, named as in the encoder. The
mapping, checked against adapters 1.3.0, is documented in docs/adapterhub.md; the export refuses
rather than approximates where the adapter itself would not map exactly (bottleneck 0, an
architecture without a matching AdapterHub model class).
Weights are only ever written as safetensors, never pickle, so load with ``use_safetensors=True``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from continual_adapters.core.config import TaskSpec
from continual_adapters.core.errors import ConfigError, RegistryError, UnsupportedArchitectureError
from continual_adapters.files.atomic import atomic_write, sha256_bytes
from continual_adapters.files.bundle import parse_bundle, read_bundle_file
from continual_adapters.registry.registry import Registry

ADAPTERS_VERSION = "1.3.0"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
HEAD_CONFIG = "head_config.json"
HEAD_WEIGHTS = "model_head.safetensors"
LAYER_NORMS = "cadapt_layer_norms.safetensors"

MODEL_CLASSES = {
    "bert": ("bert", "BertAdapterModel"),
    "roberta": ("roberta", "RobertaAdapterModel"),
    "xlm-roberta": ("roberta", "XLMRobertaAdapterModel"),
    "electra": ("electra", "ElectraAdapterModel"),
}
# AdapterHub spells the activations as cadapt does, but for the identity.
RENAMED_ACTIVATIONS = {"identity": "linear"}
SLOTS = ("attention.output", "output")


@dataclass(frozen=True)
class AdapterHubExport:
    task: str
    path: str
    files: dict[str, str]
    exact: dict[str, bool]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"format": "adapterhub", **asdict(self)}


def reduction_factor(hidden: int, bottleneck: int) -> int | float:
    """AdapterHub sizes the bottleneck as int(hidden // factor). For sizes such as 5 on 32, hidden / m
    floors to m - 1 in floating point, so the float just below it (exact through JSON) is used."""
    if bottleneck < 1:
        raise ConfigError(f"bottleneck {bottleneck} has no AdapterHub reduction factor")
    factor = hidden / bottleneck
    if factor.is_integer():
        return int(factor)
    for _ in range(4):
        if int(hidden // factor) == bottleneck:
            return factor
        factor = math.nextafter(factor, 0.0)
    raise ConfigError(
        f"bottleneck {bottleneck} on hidden size {hidden} has no reduction factor that AdapterHub "
        f"turns back into {bottleneck}"
    )


def houlsby_config(spec: TaskSpec, hidden: int) -> dict:
    """adapters' DoubleSeqBnConfig, every field spelled out so no library default can drift under it."""
    return {
        "adapter_residual_before_ln": False,
        "cross_adapter": False,
        "dropout": 0.0,
        "factorized_phm_W": True,
        "factorized_phm_rule": False,
        "hypercomplex_nonlinearity": "glorot-uniform",
        "init_weights": "houlsby" if spec.adapter.init_std == 1e-2 else "bert",
        "init_weights_seed": None,
        "inv_adapter": None,
        "inv_adapter_reduction_factor": None,
        "is_parallel": False,
        "learn_phm": True,
        "leave_out": [],
        "ln_after": False,
        "ln_before": False,
        "mh_adapter": True,
        "non_linearity": RENAMED_ACTIVATIONS.get(spec.adapter.activation, spec.adapter.activation),
        "original_ln_after": True,
        "original_ln_before": False,
        "output_adapter": True,
        "phm_bias": True,
        "phm_c_init": "normal",
        "phm_dim": 4,
        "phm_init_range": 0.0001,
        "phm_layer": False,
        "phm_rank": 1,
        "reduction_factor": reduction_factor(hidden, spec.adapter.bottleneck),
        "residual_before_ln": True,
        "scaling": 1.0,
        "shared_W_phm": False,
        "shared_phm_rule": True,
        "stochastic_depth": 0.0,
        "use_gating": False,
    }


def head_config(spec: TaskSpec) -> dict:
    """A one-layer head is AdapterHub's Dropout -> Linear, the same two modules as ours."""
    label2id = None if spec.head == "regression" else {label: i for i, label in enumerate(spec.labels)}
    return {
        "activation_function": None,
        "bias": True,
        "dropout_prob": spec.head_dropout,
        "head_type": "classification",
        "label2id": label2id,
        "layers": 1,
        "num_labels": spec.num_outputs,
        "use_pooler": False,
    }


def adapterhub_tensors(config: dict, tensors: dict[str, torch.Tensor], name: str) -> dict[str, dict[str, torch.Tensor]]:
    """Renames bundle tensors (slot 2k = layer k's attention output, 2k+1 its feed-forward output)."""
    prefix, _ = MODEL_CLASSES[config["architecture"]]
    adapters, norms = {}, {}
    for slot in range(2 * config["num_layers"]):
        layer = f"{prefix}.encoder.layer.{slot // 2}.{SLOTS[slot % 2]}"
        for ours, theirs in (("down", "adapter_down.0"), ("up", "adapter_up")):
            for kind in ("weight", "bias"):
                adapters[f"{layer}.adapters.{name}.{theirs}.{kind}"] = tensors[f"adapters.{slot}.{ours}.{kind}"]
        for kind in ("weight", "bias"):
            norms[f"{layer}.LayerNorm.{kind}"] = tensors[f"norms.{slot}.{kind}"]
    head = {f"heads.{name}.1.{kind}": tensors[f"head.out.{kind}"] for kind in ("weight", "bias")}
    return {ADAPTER_WEIGHTS: adapters, HEAD_WEIGHTS: head, LAYER_NORMS: norms}


def _envelope(config: dict, inner: dict, name: str, provenance: dict) -> dict:
    prefix, model_class = MODEL_CLASSES[config["architecture"]]
    return {
        "config": inner,
        "hidden_size": config["hidden_size"],
        "model_class": model_class,
        "model_name": config.get("base_model", ""),
        "model_type": config["architecture"],
        "name": name,
        "version": f"adapters.{ADAPTERS_VERSION}",
        "cadapt": provenance,
    }


def export_adapterhub(registry: Registry, name: str, folder: str | os.PathLike) -> AdapterHubExport:
    """Writes the AdapterHub files into `folder` (created if needed), each atomically."""
    task = registry.task(name)
    if task.status != "ready":
        raise RegistryError(f"task {name!r} is {task.status}; only ready tasks can be exported")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; the AdapterHub layout is a folder")
    record = registry.verify_bundle(name)
    config, tensors = parse_bundle(
        read_bundle_file(registry.bundle_path(name), record.sha256), str(registry.bundle_path(name))
    )
    spec = TaskSpec.from_dict(config["task"])
    if config.get("architecture") not in MODEL_CLASSES:
        raise UnsupportedArchitectureError(
            f"task {name!r} uses {config.get('architecture')}; an exact AdapterHub mapping is defined for "
            f"{', '.join(MODEL_CLASSES)}"
        )
    if spec.method not in ("adapters", "ln-only"):
        raise ConfigError(f"task {name!r} is a {spec.method!r} baseline; only adapter tasks map to AdapterHub")
    if spec.adapter.bottleneck == 0:
        raise ConfigError(f"task {name!r} has no adapter (bottleneck 0, LayerNorm-only); nothing maps to AdapterHub")
    exact = {"adapter": True, "head": spec.pooling == "cls", "layer_norms": False}
    notes = [
        f"load with model.load_adapter(path, use_safetensors=True) on {MODEL_CLASSES[config['architecture']][1]}",
        f"per-task LayerNorms are in {LAYER_NORMS}, which AdapterHub ignores; predictions differ without them",
    ]
    if not exact["head"]:
        notes.append("the head was trained on mean-pooled tokens; AdapterHub's head reads the first token (CLS)")
    provenance = {
        "task": name,
        "bundle_sha256": record.sha256,
        "base_sha256": config["base_sha256"],
        "pooling": spec.pooling,
        "exact": exact,
        "layer_norms_file": LAYER_NORMS,
    }
    groups = adapterhub_tensors(config, tensors, name)
    payloads = {
        ADAPTER_CONFIG: _envelope(config, houlsby_config(spec, config["hidden_size"]), name, provenance),
        HEAD_CONFIG: _envelope(config, head_config(spec), name, provenance),
    }
    files = {file: json.dumps(body, indent=2, sort_keys=True).encode() for file, body in payloads.items()}
    files.update({file: st_save({k: v.contiguous() for k, v in group.items()}) for file, group in groups.items()})
    for file, data in files.items():
        atomic_write(folder / file, data)
    return AdapterHubExport(name, str(folder), {f: sha256_bytes(d) for f, d in sorted(files.items())}, exact, notes)
