"""Probes: a few of a task's evaluation inputs with the exact logits they gave, to prove it unchanged.

Re-evaluating every earlier task when a task is added makes the n-th `add-task` cost O(n) full
evaluations. A probe makes that check flat: at registration a task stores `PROBE_ROWS` of its
evaluation inputs, cut to `PROBE_TOKENS`, tokenized and padded, with the logits the model gave them; adding a
later task replays every earlier probe together in mixed-task batches (`forward_mixed`: one
encoder pass for all of them) and demands the same logits, bit for bit.

Bit identity holds only if recording and confirming compute the same thing, which decides the
design (measured on CPU with MiniLM in fp32, and by tests/training/test_probe.py):

* a task's rows give bit-identical logits alone or mixed with other tasks' rows, in any order, on
  one CPU thread (`one_cpu_thread`; at two, the batch's size moves them) and in a group of at least
  2 rows (a 1-row group takes another BLAS path: 4e-8 off). So probes run on one thread, a probe
  has at least 2 rows (a lone row is repeated), and a batch holds whole probes only;
* the padded width is NOT free: some kernel's reduction over the padded length depends on it, so
  widening a batch changes the logits (measured on MiniLM: rows of at most 5 tokens at widths 5 | 6-7 |
  8-11 | 12-15 | 16+ give five different results, rows of 20 tokens 20-31 | 32+, 4e-7 apart). A
  probe is therefore stored padded to a multiple of `PROBE_WIDTH_MULTIPLE` and replayed at
  exactly that width: a batch only holds probes of one width and is never widened;
* `build_probe` records its logits with `replay`, the very function `check` confirms them with.

Bit identity is demanded only where it can hold: same kind of device (type and kernels: `device_kind`),
same precision (on CUDA the
evaluation runs under bf16 autocast, like training/loop.py). Across them `check` allows a
documented tolerance, and such a check is evidence, not a proof.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from continual_adapters.core.config import validate_task_key
from continual_adapters.core.errors import BundleError, ConfigError, DataError
from continual_adapters.data import strictjson
from continual_adapters.files.bundle import read_header
from continual_adapters.training.loop import autocast_for, one_cpu_thread

if TYPE_CHECKING:
    from continual_adapters.core.model import ContinualModel
    from continual_adapters.training.loop import Encoded

#: Rows per probe: any change to a task's tensors or routing moves every row's logits, so a few rows
#: show it; few enough that replaying 200 tasks costs seconds on CPU (docs/scale.md).
PROBE_ROWS = 2
#: A probe row is cut to this many tokens (its last token, [SEP], kept): the probe only has to run
#: the task's forward pass, not reproduce its score, and one width puts every probe in one batch.
#: Replaying is compute-bound (about 0.3 ms a token for MiniLM on 2 CPU cores), so rows x tokens
#: is what confirming a long stream costs: 2 x 8 tokens a task, about 1 s for 200 tasks.
PROBE_TOKENS = 8
#: Probes are padded to a multiple of this many tokens, so that probes of similar length share a
#: width (and so a batch) while each is replayed at exactly the width it was recorded at. Equal to
#: PROBE_TOKENS, so a new probe is always exactly that wide; older, wider probes still replay.
PROBE_WIDTH_MULTIPLE = PROBE_TOKENS
PROBE_FORMAT = "cadapt-probe"
PROBE_FORMAT_VERSION = "1"
PROBE_METADATA_KEY = "cadapt"  # the one metadata key: several are written in random order, breaking hashes
PRECISIONS = ("float32", "bfloat16")
#: Largest |difference| `check` accepts, when no tolerance is given, for a probe recorded on another
#: kind of device in the same precision (`device_kind`: fp32 kernels of CPU and GPU, or of two CPU
#: instruction sets, sum in other orders). Older probes name only the type ("cpu"): held to this too.
CROSS_DEVICE_TOLERANCE = 1e-3
#: The same across precisions (bf16 autocast on CUDA against fp32; on CPU, MiniLM-L6, they differed
#: by up to 0.29 on logits of 0.4): a failure here means "re-evaluate the task", not "it changed".
CROSS_PRECISION_TOLERANCE = 5e-2
#: Bounds a file must respect before anything is built from it.
MAX_PROBE_ROWS = 256
MAX_PROBE_LENGTH = 8192
MAX_PROBE_BYTES = 64 << 20
MAX_TOKEN_ID = (1 << 31) - 1
_DEVICE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_METADATA_FIELDS = {"format", "format_version", "task", "device", "dtype", "pad_token_id"}


@dataclass(frozen=True)
class Probe:
    """A task's fixed inputs (int64 [n, L], padded) and the float32 [n, C] logits they gave.

    `device` (`device_kind`) and `dtype` say where the recording forward ran, so that `check` knows
    whether it may demand bit identity."""

    task: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    logits: torch.Tensor
    device: str
    dtype: str
    pad_token_id: int

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class ProbeCheck:
    """One probe's verdict: `reason` says what was compared and, when not `ok`, what differed."""

    task: str
    ok: bool
    max_abs_diff: float
    reason: str


def device_kind(device: torch.device) -> str:
    """Where a probe ran, down to the kernels, since only the same kernels promise the same bits:
    ``cpu_avx512`` (torch's CPU capability), ``cuda_sm90`` (compute capability), else the type."""
    if device.type == "cpu":
        return f"cpu_{torch.backends.cpu.get_cpu_capability().lower()}"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda_sm{major}{minor}"
    return device.type


def precision(model: ContinualModel) -> str:
    """The precision `model`'s forward runs in under `autocast_for`: "float32" or "bfloat16"."""
    if model.device.type == "cuda":
        return "bfloat16"
    name = str(next(model.encoder.parameters()).dtype).removeprefix("torch.")
    if name not in PRECISIONS:
        raise ConfigError(f"a model in {name} cannot be probed (supported: {', '.join(PRECISIONS)})")
    return name


def select_rows(encoded: Encoded, rows: int = PROBE_ROWS) -> list[int]:
    """The first `rows` evaluation rows: a choice that needs no seed and that anyone can redo from
    the split alone. At least 2 rows, the only row repeated when the split has one, because a
    1-row batch takes another BLAS path and would not replay bit-identically in a group."""
    if rows < 2:
        raise ConfigError(f"a probe needs at least 2 rows, asked for {rows}")
    if len(encoded) == 0:
        raise DataError("an empty evaluation split gives no probe")
    if len(encoded) == 1:
        return [0, 0]
    return list(range(min(rows, len(encoded))))


def shorten(feature: dict[str, list[int]], tokens: int = PROBE_TOKENS) -> dict[str, list[int]]:
    """The row cut to `tokens` tokens, its last token (the tokenizer's [SEP] or </s>) kept."""
    if len(feature["input_ids"]) <= tokens:
        return dict(feature)
    return {key: [*values[: tokens - 1], values[-1]] for key, values in feature.items()}


def build_probe(
    model: ContinualModel, task: str, encoded: Encoded, rows: int = PROBE_ROWS, tokens: int = PROBE_TOKENS
) -> Probe:
    """Cuts the chosen rows to `tokens`, pads them like evaluation does (`padding="longest"`, the
    tokenizer's pad), then up to a multiple of `PROBE_WIDTH_MULTIPLE` where the model's positions allow, and records
    their logits by `replay`, the function that later confirms them: both compute the same."""
    model.task_modules(task)
    tokenizer = model.tokenizer
    if tokenizer is None or tokenizer.pad_token_id is None:
        raise ConfigError("a probe needs the model's tokenizer and its pad token")
    chosen = select_rows(encoded, rows)
    features = [shorten(encoded.features[i], tokens) for i in chosen]
    width = -(-max(len(feature["input_ids"]) for feature in features) // PROBE_WIDTH_MULTIPLE) * PROBE_WIDTH_MULTIPLE
    limit = min(getattr(model.encoder.config, "max_position_embeddings", None) or width, tokenizer.model_max_length)
    multiple = PROBE_WIDTH_MULTIPLE if width <= limit else None  # else the longest row sets the width
    batch = tokenizer.pad(features, padding="longest", pad_to_multiple_of=multiple, return_tensors="pt")
    types = batch.get("token_type_ids")
    unrecorded = Probe(
        task=task,
        input_ids=batch["input_ids"].to(torch.int64),
        attention_mask=batch["attention_mask"].to(torch.int64),
        token_type_ids=None if types is None else types.to(torch.int64),
        logits=torch.empty(len(chosen), 0),
        device=device_kind(model.device),
        dtype=precision(model),
        pad_token_id=int(tokenizer.pad_token_id),
    )
    probe = replace(unrecorded, logits=replay(model, [unrecorded])[task])
    problem = probe_problem(probe)
    if problem:
        raise ConfigError(f"task {task!r} cannot be probed: {problem}")
    return probe


def replay(model: ContinualModel, probes: Sequence[Probe], tasks_per_batch: int = 16) -> dict[str, torch.Tensor]:
    """Float32 CPU logits per task, computed as evaluation computes them (eval mode, inference
    mode, the evaluation autocast), up to `tasks_per_batch` whole probes per `forward_mixed` pass.

    Probes are batched with those of the same width (and with or without token types) in the
    order given, and each batch runs at that width: widening a probe would change its logits."""
    if tasks_per_batch < 1:
        raise ConfigError(f"tasks_per_batch must be at least 1, got {tasks_per_batch}")
    seen: set[str] = set()
    for probe in probes:
        if probe.task in seen:
            raise ConfigError(f"two probes for task {probe.task!r}: a task has one probe")
        seen.add(probe.task)
        model.task_modules(probe.task)  # TaskNotFoundError before anything runs
        problem = _input_problem(probe) or _model_problem(model, probe)
        if problem:
            raise ConfigError(f"the probe of task {probe.task!r} cannot run on this model: {problem}")
    device = model.device
    was_training = model.training
    model.eval()
    out: dict[str, torch.Tensor] = {}
    try:
        with torch.inference_mode(), autocast_for(device), one_cpu_thread(device):
            for batch in _batches(probes, tasks_per_batch):
                ids = torch.cat([probe.input_ids for probe in batch]).to(device)
                mask = torch.cat([probe.attention_mask for probe in batch]).to(device)
                types = [probe.token_type_ids for probe in batch if probe.token_type_ids is not None]
                names = [probe.task for probe in batch for _ in range(probe.rows)]
                logits = model.forward_mixed(ids, mask, torch.cat(types).to(device) if types else None, tasks=names)
                offset = 0
                for probe in batch:
                    out[probe.task] = torch.stack(logits[offset : offset + probe.rows]).float().cpu()
                    offset += probe.rows
    finally:
        model.train(was_training)
    return {task: logits.clone() for task, logits in out.items()}  # clone: no inference tensors leak


def _batches(probes: Sequence[Probe], tasks_per_batch: int) -> list[list[Probe]]:
    """Whole probes, grouped by (width, token types or not), `tasks_per_batch` at most per batch."""
    groups: dict[tuple[int, bool], list[Probe]] = {}
    for probe in probes:
        groups.setdefault((int(probe.input_ids.shape[1]), probe.token_type_ids is not None), []).append(probe)
    return [g[i : i + tasks_per_batch] for g in groups.values() for i in range(0, len(g), tasks_per_batch)]


def check(model: ContinualModel, probes: Sequence[Probe], tolerance: float = 0.0) -> list[ProbeCheck]:
    """Replays `probes` and compares with their recorded logits, one verdict per probe.

    With `tolerance` 0 (the default) a probe recorded on the live model's kind of device
    (`device_kind`) and precision must match bit for bit (`torch.equal`); one recorded elsewhere may differ by
    `CROSS_DEVICE_TOLERANCE` (same precision) or `CROSS_PRECISION_TOLERANCE` (other precision).
    A positive `tolerance` replaces both: |replayed - recorded| <= tolerance everywhere.
    """
    if not tolerance >= 0:
        raise ConfigError(f"tolerance must be a number >= 0, got {tolerance!r}")
    live = replay(model, probes)
    device, dtype = device_kind(model.device), precision(model)
    verdicts = []
    for probe in probes:
        got, want = live[probe.task], probe.logits
        where = f"recorded on {probe.device}/{probe.dtype}, replayed on {device}/{dtype}"
        diff = float((got - want).abs().max()) if got.shape == want.shape else math.inf
        diff = diff if math.isfinite(diff) else math.inf
        cross = CROSS_DEVICE_TOLERANCE if probe.dtype == dtype else CROSS_PRECISION_TOLERANCE
        allowed = tolerance or (0.0 if (probe.device, probe.dtype) == (device, dtype) else cross)
        if got.shape != want.shape:
            ok, reason = False, f"logits shape {tuple(got.shape)} differs from the recorded {tuple(want.shape)}"
        elif allowed == 0:
            ok = torch.equal(got, want)
            reason = "bit-identical" if ok else f"logits differ by up to {diff:.3g}; bit identity required"
        else:
            ok = diff <= allowed
            reason = f"max |diff| {diff:.3g} {'within' if ok else 'over'} the tolerance {allowed:g}"
        verdicts.append(ProbeCheck(probe.task, ok, diff, f"{reason} ({where})"))
    return verdicts


def _input_problem(probe: Probe) -> str | None:
    """What makes a probe's inputs unusable, or None: shapes, dtypes, id ranges, masks."""
    try:
        validate_task_key(probe.task)
    except ConfigError as exc:
        return str(exc)
    ids = probe.input_ids
    named = {"input_ids": ids, "attention_mask": probe.attention_mask, "token_type_ids": probe.token_type_ids}
    for key, tensor in named.items():
        if tensor is None:
            continue
        if tensor.dtype != torch.int64 or tensor.dim() != 2:
            return f"{key} is {tensor.dtype}{tuple(tensor.shape)}, not int64 [rows, length]"
        if tensor.shape != ids.shape:
            return f"{key} is {tuple(tensor.shape)}, input_ids {tuple(ids.shape)}"
    rows, length = ids.shape
    if not 2 <= rows <= MAX_PROBE_ROWS or not 1 <= length <= MAX_PROBE_LENGTH:
        return f"{rows} rows of length {length} (need 2..{MAX_PROBE_ROWS} rows, 1..{MAX_PROBE_LENGTH} tokens)"
    for key in ("input_ids", "token_type_ids"):
        tensor = named[key]
        if tensor is not None and (int(tensor.min()) < 0 or int(tensor.max()) > MAX_TOKEN_ID):
            return f"{key} holds ids outside 0..{MAX_TOKEN_ID}"
    mask = probe.attention_mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        return "attention_mask holds values other than 0 and 1"
    if bool((mask.sum(1) == 0).any()):
        return "a row attends to no token"
    if type(probe.pad_token_id) is not int or not 0 <= probe.pad_token_id <= MAX_TOKEN_ID:
        return f"pad_token_id {probe.pad_token_id!r:.40} is not an id in 0..{MAX_TOKEN_ID}"
    return None


def probe_problem(probe: Probe) -> str | None:
    """What makes a recorded probe unusable, or None: its inputs, logits, device and precision."""
    problem = _input_problem(probe)
    if problem:
        return problem
    logits = probe.logits
    if logits.dtype != torch.float32 or logits.dim() != 2 or logits.shape[0] != probe.rows or logits.shape[1] < 1:
        return f"logits are {logits.dtype}{tuple(logits.shape)}, not float32 [{probe.rows}, classes]"
    if not bool(torch.isfinite(logits).all()):
        return "logits hold NaN or Inf"
    if not isinstance(probe.device, str) or not _DEVICE.match(probe.device):
        return f"device {probe.device!r:.40} is not a device kind"
    if probe.dtype not in PRECISIONS:
        return f"dtype {probe.dtype!r:.40} is not one of {', '.join(PRECISIONS)}"
    return None


def _model_problem(model: ContinualModel, probe: Probe) -> str | None:
    """Ids the model's embeddings do not have: out of range they crash a CPU forward with an
    IndexError and a CUDA one with a device-side assert, so they are refused before either."""
    embeddings: Any = model.encoder.get_input_embeddings()
    vocab: int = embeddings.num_embeddings
    if int(probe.input_ids.max()) >= vocab or probe.pad_token_id >= vocab:
        return f"token ids reach {max(int(probe.input_ids.max()), probe.pad_token_id)}, the vocabulary has {vocab}"
    types = getattr(model.encoder.config, "type_vocab_size", None)
    if probe.token_type_ids is not None and types and int(probe.token_type_ids.max()) >= types:
        return f"token type ids reach {int(probe.token_type_ids.max())}, the model has {types}"
    positions = getattr(model.encoder.config, "max_position_embeddings", None)
    if positions and probe.input_ids.shape[1] > positions:
        return f"{probe.input_ids.shape[1]} tokens per row, the model takes at most {positions}"
    return None


def probe_bytes(probe: Probe) -> bytes:
    """The probe as safetensors bytes with ONE metadata key of sorted JSON: deterministic, so
    the registry's sha256 of a probe depends on its content only."""
    problem = probe_problem(probe)
    if problem:
        raise ConfigError(f"the probe of task {probe.task!r} cannot be stored: {problem}")
    tensors = {"input_ids": probe.input_ids, "attention_mask": probe.attention_mask, "logits": probe.logits}
    if probe.token_type_ids is not None:
        tensors["token_type_ids"] = probe.token_type_ids
    content = {key: getattr(probe, key) for key in ("task", "device", "dtype", "pad_token_id")}
    content.update(format=PROBE_FORMAT, format_version=PROBE_FORMAT_VERSION)
    data: bytes = st_save(
        {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()},
        metadata={PROBE_METADATA_KEY: json.dumps(content, sort_keys=True)},
    )
    return data


def parse_probe(data: bytes, source: str) -> Probe:
    """The probe stored in `data`, or BundleError naming `source`. Nothing is trusted: the header
    (length, strict JSON, exactly the expected tensors and dtypes) is checked before any tensor is
    read, safetensors checks that the byte ranges tile the data, and `probe_problem` the values."""
    if len(data) > MAX_PROBE_BYTES:
        raise BundleError(f"{source}: {len(data)} bytes is larger than any probe ({MAX_PROBE_BYTES})")
    metadata, entries = read_header(data, source)
    content = _probe_metadata(metadata, source)
    required = {"input_ids", "attention_mask", "logits"}
    missing, extra = sorted(required - set(entries)), sorted(set(entries) - required - {"token_type_ids"})
    if missing or extra:
        raise BundleError(f"{source}: probe tensors missing {missing}, unexpected {[k[:40] for k in extra[:5]]}")
    for key, entry in entries.items():
        want = "F32" if key == "logits" else "I64"
        if not isinstance(entry, dict) or entry.get("dtype") != want:
            found = entry.get("dtype") if isinstance(entry, dict) else entry
            raise BundleError(f"{source}: probe tensor {key} is {found!r:.20}, must be {want}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise BundleError(f"{source}: not a valid safetensors file ({exc})") from None
    fields = {key: content[key] for key in ("device", "dtype", "pad_token_id")}
    ids, mask, logits = tensors["input_ids"], tensors["attention_mask"], tensors["logits"]
    probe = Probe(content["task"], ids, mask, tensors.get("token_type_ids"), logits, **fields)
    problem = probe_problem(probe)
    if problem:
        raise BundleError(f"{source}: {problem}")
    return probe


def _probe_metadata(metadata: Any, source: str) -> dict[str, Any]:
    """The probe's JSON metadata: exactly the expected fields, each of the expected type."""
    expected = f"not a {PROBE_FORMAT} v{PROBE_FORMAT_VERSION} file"
    if not isinstance(metadata, dict) or set(metadata) != {PROBE_METADATA_KEY}:
        raise BundleError(f"{source}: {expected} (metadata must be one {PROBE_METADATA_KEY!r} key)")
    try:
        content = strictjson.loads(metadata[PROBE_METADATA_KEY])
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{source}: probe metadata is not valid JSON ({exc})") from None
    version = (content.get("format"), content.get("format_version")) if isinstance(content, dict) else None
    if version != (PROBE_FORMAT, PROBE_FORMAT_VERSION):
        raise BundleError(f"{source}: {expected}")
    if set(content) != _METADATA_FIELDS:
        raise BundleError(
            f"{source}: probe metadata has fields {sorted(content)[:10]}, want {sorted(_METADATA_FIELDS)}"
        )
    if not all(isinstance(content[key], str) for key in ("task", "device", "dtype")):
        raise BundleError(f"{source}: probe metadata task, device and dtype must be strings")
    return content
