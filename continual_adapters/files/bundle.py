"""Task bundles: one safetensors file per task, its config in the header.

A bundle holds a task's tensors (adapters, LayerNorm copies, head) and, in the safetensors
header metadata, the JSON config needed to rebuild those modules: the task spec, the
architecture, the base model and the sha256 of its weights, and the parameter counts. One
file means one sha256 covers weights and config together, so the registry can vouch for both.

Loading never trusts the file. In order: it must be a regular file (no symlink, FIFO or
device) of at most 1 GiB; the 8-byte header length must fit the file and 1 MiB; the header
must be JSON without duplicate keys whose tensor byte ranges tile the data section exactly;
the config must match the model (architecture, sizes, adapter and LoRA bytes actually present), all
before any tensor is read or any module built; then the sha256 against the expected one, and
every key, shape and dtype against what the config implies, and every value must be finite.
No pickle is ever read or written.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from continual_adapters.core.adapter import adapter_parameter_count
from continual_adapters.core.config import TaskSpec
from continual_adapters.core.errors import BundleError, ConfigError, IntegrityError, StorageError, TaskExistsError
from continual_adapters.data import strictjson
from continual_adapters.files.atomic import atomic_write, sha256_bytes
from continual_adapters.files.storage import ArtifactStore, Readable

FORMAT = "cadapt-bundle"
FORMAT_VERSION = "1"
MAX_BUNDLE_BYTES = 1 << 30
MAX_HEADER_BYTES = 1 << 20
DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def bundle_config(model, name: str) -> dict:
    return {
        "task": model.spec(name).to_dict(),
        "architecture": model.architecture,
        "base_model": model.base_name,
        "base_sha256": model.base_sha256(),
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "param_counts": model.parameter_counts(name).to_dict(),
    }


def bundle_bytes(model, name: str) -> bytes:
    """Serialises a task to safetensors bytes (fp32 on CPU, so the hash does not depend on device)."""
    tensors = {
        key: value.detach().to("cpu", torch.float32).contiguous()
        for key, value in model.task_modules(name).state_dict().items()
    }
    return st_save(tensors, metadata=bundle_metadata(bundle_config(model, name)))


def bundle_metadata(config: dict) -> dict[str, str]:
    """A single metadata key: safetensors writes several keys in random order, breaking hashes."""
    return {
        "cadapt": json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "config": config}, sort_keys=True)
    }


def save_task(model, name: str, path: str | Path) -> Path:
    """Writes task `name` of `model` to `path` as a bundle (all or nothing)."""
    try:
        return atomic_write(path, bundle_bytes(model, name))
    except StorageError as exc:
        raise BundleError(f"{exc.path}: cannot write the bundle ({exc.step} failed: {exc.reason})") from None


def _open_regular(path: Path):
    """O_NOFOLLOW and O_NONBLOCK, then fstat on the open descriptor: no symlink swapped in after a
    check, and a FIFO or device named like a bundle is refused instead of blocking the reader."""
    if path.is_symlink():
        raise BundleError(f"{path}: refusing a symbolic link as a bundle")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle file") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot open the bundle ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BundleError(f"{path}: not a regular file")
    if info.st_size > MAX_BUNDLE_BYTES:
        os.close(fd)
        raise BundleError(f"{path}: {info.st_size} bytes is larger than any bundle ({MAX_BUNDLE_BYTES})")
    return os.fdopen(fd, "rb"), info.st_size


def _read_exactly(handle, count: int, source: str, what: str) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise BundleError(f"{source}: truncated: {what} needs {count} bytes, the file has {len(data)} left")
    return data


def _read_head(handle, size: int, source: str) -> bytes:
    """The 8-byte length and the header it announces, and nothing more."""
    if size < 8:
        raise BundleError(f"{source}: truncated ({size} bytes), not a safetensors file")
    prefix = _read_exactly(handle, 8, source, "the header length")
    return prefix + _read_exactly(handle, _header_length(prefix, size, source), source, "the header")


def read_bundle_file(path: str | Path, expected_sha256: str | None = None) -> bytes:
    """A bundle's bytes; the header length is checked against the file before the rest is read."""
    path = Path(path)
    handle, size = _open_regular(path)
    with handle:
        head = _read_head(handle, size, str(path))
        data = head + _read_exactly(handle, size - len(head), str(path), "the tensor data")
    _check_sha256(data, expected_sha256, str(path))
    return data


def _check_sha256(data: bytes, expected: str | None, source: str) -> None:
    if expected is not None and sha256_bytes(data) != expected:
        raise IntegrityError(f"{source}: sha256 {sha256_bytes(data)} does not match the recorded {expected}")


def _header_length(prefix: bytes, size: int, source: str) -> int:
    (header_len,) = struct.unpack("<Q", prefix[:8])
    if header_len < 2 or header_len > MAX_HEADER_BYTES or header_len > size - 8:
        raise BundleError(
            f"{source}: header length {header_len} is impossible for a {size}-byte file (at most {MAX_HEADER_BYTES})"
        )
    return header_len


def parse_header(data: bytes, source: str = "bundle", size: int | None = None) -> tuple[dict, dict[str, dict]]:
    """(config, tensor entries) of a bundle: `read_header`, then the cadapt bundle metadata."""
    metadata, entries = read_header(data, source, size)
    return _config_from(metadata, source), entries


def read_header(data: bytes, source: str, size: int | None = None) -> tuple[Any, dict[str, dict]]:
    """(metadata, tensor entries) from the start of any safetensors file of `size` bytes (default: all
    of `data`), validated without reading any tensor: JSON without duplicate keys, known dtypes,
    shapes that match their byte ranges, and ranges that tile the data section exactly. Bundles and
    probes both read their headers through it."""
    size = len(data) if size is None else size
    if len(data) < 8:
        raise BundleError(f"{source}: truncated ({len(data)} bytes), not a safetensors file")
    header_len = _header_length(data, size, source)
    try:
        header = strictjson.loads(data[8 : 8 + header_len])
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{source}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise BundleError(f"{source}: header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    return metadata, _check_entries(header, size - 8 - header_len, source)


def _check_entries(header: dict, data_len: int, source: str) -> dict[str, dict]:
    spans = []
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise BundleError(f"{source}: tensor {key!r} has a malformed header entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise BundleError(f"{source}: tensor {key!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape):
            raise BundleError(f"{source}: tensor {key!r} has an invalid shape {shape!r:.80}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise BundleError(
                f"{source}: tensor {key!r} has data offsets {offsets!r:.80} outside the {data_len}-byte data section"
            )
        if math.prod(shape) * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
            raise BundleError(
                f"{source}: tensor {key!r} is {dtype}{tuple(shape)} but spans {offsets[1] - offsets[0]} bytes"
            )
        spans.append((offsets[0], offsets[1], key))
    end = 0
    for begin, stop, key in sorted(spans):
        if begin != end:
            problem = "overlaps the previous tensor" if begin < end else f"leaves a gap of {begin - end} bytes"
            raise BundleError(f"{source}: tensor {key!r} {problem} (offsets {begin}..{stop})")
        end = stop
    if end != data_len:
        raise BundleError(f"{source}: tensors cover {end} bytes of a {data_len}-byte data section")
    return header


def _config_from(metadata, source: str) -> dict:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BundleError(f"{source}: not a {FORMAT} v{FORMAT_VERSION} bundle (no string metadata)")
    try:
        content = strictjson.loads(metadata.get("cadapt", "{}"))
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{source}: bundle metadata is not valid JSON ({exc})") from None
    if (
        not isinstance(content, dict)
        or content.get("format") != FORMAT
        or content.get("format_version") != FORMAT_VERSION
    ):
        raise BundleError(f"{source}: not a {FORMAT} v{FORMAT_VERSION} bundle")
    try:
        config = content["config"]
        TaskSpec.from_dict(config["task"])
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise BundleError(f"{source}: bundle config is malformed ({exc})") from None
    return config


def parse_bundle(data: bytes, source: str = "bundle") -> tuple[dict, dict[str, torch.Tensor]]:
    """Returns (config, tensors) after validating the container and its metadata."""
    config, _ = parse_header(data, source)
    return config, _tensors(data, source)


def _tensors(data: bytes, source: str) -> dict[str, torch.Tensor]:
    try:
        return st_load(data)
    except (SafetensorError, ValueError) as exc:
        raise BundleError(f"{source}: not a valid safetensors file ({exc})") from None


def _check_size_against_model(model, spec: TaskSpec, entries: dict[str, dict], source: str) -> None:
    """Compares the adapter size (and LoRA rank and targets) the config claims with the bytes actually
    present before any module is built: a tiny file claiming a huge bottleneck must not make us allocate it."""
    present = sum(math.prod(e["shape"]) for k, e in entries.items() if k.startswith("adapters."))
    implied = adapter_parameter_count(model.hidden_size, spec.adapter.bottleneck, model.num_layers)
    if present != implied:
        raise BundleError(
            f"{source}: config claims bottleneck {spec.adapter.bottleneck} "
            f"({implied} adapter parameters), the file holds {present}"
        )
    lora_count = getattr(model, "lora_parameter_count", None)  # a LoraModel (core/lora.py)
    if spec.lora is not None and lora_count is not None:
        present = sum(math.prod(e["shape"]) for k, e in entries.items() if k.startswith("lora."))
        implied = lora_count(spec.lora)
        if present != implied:
            raise BundleError(
                f"{source}: config claims LoRA rank {spec.lora.rank} on {list(spec.lora.targets) or 'the default'} "
                f"targets ({implied} LoRA parameters), the file holds {present}"
            )


def check_tensors(
    expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str, finite: bool = True
) -> None:
    """Keys, shapes and dtypes against the modules the config builds, and (unless `finite=False`)
    that no value is NaN or Inf. `load_task` skips the value scan for bytes that matched a recorded
    sha256: they are the bytes checked when the task was registered or imported."""
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise BundleError(
            f"{source}: tensor keys do not match its config (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for key, value in tensors.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != torch.float32:
            raise BundleError(
                f"{source}: tensor {key} is {value.dtype}{tuple(value.shape)}, "
                f"config implies torch.float32{tuple(want.shape)}"
            )
    if finite and tensors and not torch.isfinite(torch.cat([value.flatten() for value in tensors.values()])).all():
        # One pass over all values (attaching 200 tasks checks 15,000 tensors); then name the culprit.
        bad = next(key for key, value in tensors.items() if not torch.isfinite(value).all())
        raise BundleError(f"{source}: tensor {bad} holds NaN or Inf")


def _check_entries_against(expected: dict[str, torch.Tensor], entries: dict[str, dict], source: str) -> None:
    """Keys, shapes and dtypes from the header alone, so a mismatched file is refused unread."""
    missing, extra = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
    if missing or extra:
        raise BundleError(
            f"{source}: tensor keys do not match its config (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for key, entry in entries.items():
        want = tuple(expected[key].shape)
        if tuple(entry["shape"]) != want or entry["dtype"] != "F32":
            raise BundleError(
                f"{source}: tensor {key} is {entry['dtype']}{tuple(entry['shape'])}, config implies F32{want}"
            )


def load_task(
    model, path: str | Path, expected_sha256: str | None = None, allow_base_mismatch: bool = False
) -> TaskSpec:
    """Attaches the task stored at `path` to `model`, or raises without changing the model.

    Memory stays bounded by what the model itself implies: the header (at most 1 MiB) is read and
    checked against the model first, and the tensor data only once its exact size is known."""
    handle, size = _open_regular(Path(path))
    with handle:
        return load_task_from(model, handle, size, str(path), expected_sha256, allow_base_mismatch)


def load_stored_task(model, store: ArtifactStore, rel: str, expected_sha256: str | None = None) -> TaskSpec:
    """`load_task` for the bundle at `rel` in an artifact store: a local one's file by its checked
    path, exactly as `load_task` reads any file; a remote one's object through the store's reads."""
    path = store.local_path(rel)
    if path is not None:
        return load_task(model, path, expected_sha256)
    store.check(rel)
    source = store.location(rel)
    try:
        with store.open(rel) as (handle, size):
            return load_task_from(model, handle, size, source, expected_sha256)
    except FileNotFoundError:
        raise BundleError(f"{source}: no such bundle file") from None
    except OSError as exc:
        raise BundleError(f"{source}: cannot read the bundle ({exc})") from None


def load_task_from(
    model,
    handle: Readable,
    size: int,
    source: str,
    expected_sha256: str | None = None,
    allow_base_mismatch: bool = False,
) -> TaskSpec:
    """`load_task` on a file already opened (`size` bytes, named `source` in messages)."""
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{source}: {size} bytes is larger than any bundle ({MAX_BUNDLE_BYTES})")
    head = _read_head(handle, size, source)
    config, entries = parse_header(head, source, size)
    spec = TaskSpec.from_dict(config["task"])
    if (
        config.get("architecture") != model.architecture
        or config.get("hidden_size") != model.hidden_size
        or config.get("num_layers") != model.num_layers
    ):
        raise BundleError(
            f"{source}: built for {config.get('architecture')!r:.40} "
            f"(hidden {config.get('hidden_size')!r:.20}, {config.get('num_layers')!r:.20} layers), "
            f"this model is {model.architecture} (hidden {model.hidden_size}, "
            f"{model.num_layers} layers)"
        )
    if not allow_base_mismatch and config.get("base_sha256") != model.base_sha256():
        raise IntegrityError(
            f"{source}: trained on base weights {config.get('base_sha256')!r:.80}, "
            f"this model's are {model.base_sha256()}"
        )
    if spec.name in model.tasks:
        raise TaskExistsError(f"{source}: task {spec.name!r} is already attached to this model")
    _check_size_against_model(model, spec, entries, source)
    try:
        modules = model.add_task(spec, initialise=False)  # every tensor is loaded below
    except (ValueError, TypeError, RuntimeError) as exc:
        raise BundleError(f"{source}: its task config cannot build modules ({exc})") from None
    try:
        targets = modules.state_dict()
        _check_entries_against(targets, entries, source)
        data = head + _read_exactly(handle, size - len(head), source, "the tensor data")
        _check_sha256(data, expected_sha256, source)
        tensors = _tensors(data, source)  # the header was parsed and checked above
        check_tensors(targets, tensors, source, finite=expected_sha256 is None)
        # Keys, shapes and dtypes match exactly (checked above), so a plain copy into the
        # parameters' storage does what load_state_dict would, without its per-module walk.
        with torch.no_grad():
            for key, target in targets.items():
                target.copy_(tensors[key])
    except BaseException:
        model.remove_task(spec.name)
        raise
    return spec
