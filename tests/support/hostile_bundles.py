"""Hostile bundle cases for tests/files/test_hostile_bundles*.py, built from one valid tiny bundle.

Both test files (`files.bundle.load_task` refusing them, and registry verification refusing them)
run the same cases through the same bounded check, so the table and the measurements live here:
`MEASURED` collects every timed rejection of the session for the figures docs/reliability.md quotes.

Cases are made by editing the valid bundle's header, metadata, config or bytes. `sha_only` marks the
edits safetensors and every structural check accept (a flipped bit in the data, a renamed label):
only the recorded sha256 can catch those.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from continual_adapters.core.config import AdapterConfig, TaskSpec
from continual_adapters.core.errors import BundleError, IntegrityError
from continual_adapters.files.atomic import sha256_bytes
from continual_adapters.files.bundle import MAX_BUNDLE_BYTES, bundle_bytes, bundle_metadata, parse_bundle
from tests.support.tiny import tiny_model

SPEC = TaskSpec("a", labels=("neg", "pos"), adapter=AdapterConfig(bottleneck=4))
EXTRA_BYTES_LIMIT = 50 * 2**20
MEASURED: list[tuple[float, int]] = []
SENTINEL = Path("/tmp") / f"cadapt-pickle-ran-{os.getpid()}"


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {SENTINEL}",))


def _valid_model():
    torch.manual_seed(3)
    model = tiny_model()
    model.add_task(SPEC)
    for p in model.tasks["a"].parameters():
        p.data.normal_()
    return model


VALID = bundle_bytes(_valid_model(), "a")
VALID_SHA = sha256_bytes(VALID)
_HL = struct.unpack("<Q", VALID[:8])[0]
HEADER = json.loads(VALID[8 : 8 + _HL])
DATA = VALID[8 + _HL :]
CADAPT = json.loads(HEADER["__metadata__"]["cadapt"])


def assemble(header, data: bytes = DATA, header_len: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


def edit_header(fn: Callable[[dict], None], data: bytes = DATA) -> bytes:
    header = json.loads(json.dumps(HEADER))
    fn(header)
    return assemble(header, data)


def edit_cadapt(fn: Callable[[dict], None]) -> bytes:
    content = json.loads(json.dumps(CADAPT))
    fn(content)
    return edit_header(lambda h: h["__metadata__"].update(cadapt=json.dumps(content)))


def edit_config(fn: Callable[[dict], None]) -> bytes:
    return edit_cadapt(lambda c: fn(c["config"]))


def edit_tensors(fn: Callable[[dict], None], metadata: dict | None = None) -> bytes:
    config, tensors = parse_bundle(VALID)
    fn(tensors)
    return st_save(tensors, metadata=bundle_metadata(config) if metadata is None else metadata)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def _first(key_prefix: str) -> str:
    return sorted(k for k in HEADER if k.startswith(key_prefix))[0]


def _set(key: str, field: str, value):
    return lambda h: h[key].__setitem__(field, value)


def _last_key() -> str:
    return max((k for k in HEADER if k != "__metadata__"), key=lambda k: HEADER[k]["data_offsets"][0])


def _first_key() -> str:
    return min((k for k in HEADER if k != "__metadata__"), key=lambda k: HEADER[k]["data_offsets"][0])


def _dup_key_header() -> bytes:
    text = json.dumps(HEADER)
    key = _first_key()
    entry = json.dumps({key: HEADER[key]})[1:-1]
    return assemble(("{" + entry + ", " + text[1:]).encode())


def _nested(depth: int) -> bytes:
    return assemble(b"[" * depth + b"]" * depth)


def _pad_header(size: int) -> bytes:
    raw = json.dumps(HEADER).encode()
    return assemble(raw + b" " * (size - len(raw)))


@dataclass
class Case:
    name: str
    build: Callable[[Path], None]
    match: str
    sha_only: bool = False
    error: type = BundleError


def _bytes(data_or_fn) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        path.write_bytes(data_or_fn() if callable(data_or_fn) else data_or_fn)

    return build


def _symlink(path: Path) -> None:
    target = path.with_name("real.safetensors")
    target.write_bytes(VALID)
    path.symlink_to(target)


def _sparse(path: Path) -> None:
    with path.open("wb") as fh:
        fh.truncate(MAX_BUNDLE_BYTES + 1)


CASES = [
    Case("empty", _bytes(b""), "truncated"),
    Case("three-bytes", _bytes(VALID[:3]), "truncated"),
    Case("seven-bytes", _bytes(VALID[:7]), "truncated"),
    Case("length-only", _bytes(VALID[:8]), "header length"),
    Case("cut-in-header", _bytes(VALID[: 8 + _HL // 2]), "header length"),
    Case("cut-in-data", _bytes(VALID[:-100]), "outside"),
    Case("cut-last-byte", _bytes(VALID[:-1]), "outside"),
    Case("trailing-bytes", _bytes(VALID + b"\0" * 8), "cover"),
    Case("header-length-zero", _bytes(struct.pack("<Q", 0) + VALID[8:]), "header length 0"),
    Case("header-length-one", _bytes(struct.pack("<Q", 1) + VALID[8:]), "header length 1"),
    Case("header-length-past-end", _bytes(struct.pack("<Q", len(VALID)) + VALID[8:]), "impossible"),
    Case("header-length-2^64-1", _bytes(struct.pack("<Q", 2**64 - 1) + VALID[8:]), "impossible"),
    Case(
        "header-length-short", _bytes(lambda: assemble(json.dumps(HEADER).encode(), DATA, _HL - 16)), "not valid JSON"
    ),
    Case("oversized-header", _bytes(lambda: _pad_header(2**20 + 8)), "impossible"),
    Case("header-not-utf8", _bytes(lambda: assemble(b"\xff" * 64)), "not valid JSON"),
    Case("header-not-json", _bytes(lambda: assemble(b"{not json")), "not valid JSON"),
    Case("header-is-list", _bytes(lambda: assemble(b"[]")), "not an object"),
    Case("header-is-string", _bytes(lambda: assemble(b'"x"')), "not an object"),
    Case("header-deeply-nested", _bytes(lambda: _nested(200_000)), "not valid JSON"),
    Case("duplicate-tensor-key", _bytes(_dup_key_header), "duplicate"),
    Case(
        "duplicate-metadata-key",
        _bytes(lambda: assemble(('{"__metadata__": {}, ' + json.dumps(HEADER)[1:]).encode())),
        "duplicate",
    ),
    Case(
        "duplicate-key-in-cadapt-json",
        _bytes(
            lambda: edit_header(
                lambda h: h["__metadata__"].update(cadapt='{"format": "x", ' + HEADER["__metadata__"]["cadapt"][1:])
            )
        ),
        "duplicate",
    ),
    Case(
        "overlapping-offsets",
        _bytes(
            lambda: edit_header(
                _set(
                    _last_key(),
                    "data_offsets",
                    HEADER[_first_key()]["data_offsets"][:1]
                    + [
                        HEADER[_first_key()]["data_offsets"][0]
                        + HEADER[_last_key()]["data_offsets"][1]
                        - HEADER[_last_key()]["data_offsets"][0]
                    ],
                )
            )
        ),
        "overlaps|spans",
    ),
    Case(
        "gap-between-tensors",
        _bytes(
            lambda: edit_header(
                _set(_last_key(), "data_offsets", [o + 4 for o in HEADER[_last_key()]["data_offsets"]]),
                DATA + b"\0" * 4,
            )
        ),
        "gap",
    ),
    Case(
        "offsets-past-data",
        _bytes(
            lambda: edit_header(_set(_last_key(), "data_offsets", [o + 4 for o in HEADER[_last_key()]["data_offsets"]]))
        ),
        "outside",
    ),
    Case(
        "offsets-reversed",
        _bytes(lambda: edit_header(_set(_first_key(), "data_offsets", HEADER[_first_key()]["data_offsets"][::-1]))),
        "outside",
    ),
    Case("offsets-negative", _bytes(lambda: edit_header(_set(_first_key(), "data_offsets", [-4, 0]))), "outside"),
    Case(
        "offsets-three-numbers", _bytes(lambda: edit_header(_set(_first_key(), "data_offsets", [0, 4, 8]))), "outside"
    ),
    Case("offsets-floats", _bytes(lambda: edit_header(_set(_first_key(), "data_offsets", [0.0, 4.0]))), "outside"),
    Case("shape-negative", _bytes(lambda: edit_header(_set(_first_key(), "shape", [-1]))), "invalid shape"),
    Case("shape-not-a-list", _bytes(lambda: edit_header(_set(_first_key(), "shape", "32"))), "invalid shape"),
    Case("shape-disagrees-with-bytes", _bytes(lambda: edit_header(_set(_first_key(), "shape", [999]))), "spans"),
    Case("dtype-unknown", _bytes(lambda: edit_header(_set(_first_key(), "dtype", "F33"))), "unknown dtype"),
    Case("dtype-int32-same-size", _bytes(lambda: edit_header(_set(_first_key(), "dtype", "I32"))), "config implies"),
    Case(
        "dtype-float64",
        _bytes(
            lambda: edit_tensors(lambda t: t.update({k: v.double() for k, v in t.items() if k.startswith("head.")}))
        ),
        "config implies",
    ),
    Case(
        "dtype-bfloat16",
        _bytes(
            lambda: edit_tensors(lambda t: t.update({k: v.bfloat16() for k, v in t.items() if k.startswith("norms.0")}))
        ),
        "config implies",
    ),
    Case("entry-extra-field", _bytes(lambda: edit_header(_set(_first_key(), "extra", 1))), "malformed"),
    Case("entry-not-object", _bytes(lambda: edit_header(lambda h: h.__setitem__(_first_key(), [1, 2]))), "malformed"),
    Case("tensor-missing", _bytes(lambda: edit_tensors(lambda t: t.pop("head.out.bias"))), "missing"),
    Case("tensor-extra", _bytes(lambda: edit_tensors(lambda t: t.__setitem__("evil", torch.zeros(4)))), "unexpected"),
    Case(
        "tensor-renamed",
        _bytes(lambda: edit_tensors(lambda t: t.__setitem__("head.out.bias2", t.pop("head.out.bias")))),
        "missing",
    ),
    Case(
        "shape-disagrees-with-config",
        _bytes(lambda: edit_tensors(lambda t: t.__setitem__("head.out.weight", torch.zeros(3, 32)))),
        "head.out.weight",
    ),
    Case(
        "adapter-shape-swapped",
        _bytes(
            lambda: edit_tensors(
                lambda t: t.__setitem__("adapters.0.down.weight", t["adapters.0.down.weight"].T.contiguous())
            )
        ),
        "adapters.0.down.weight",
    ),
    Case("nan", _bytes(lambda: edit_tensors(lambda t: t["head.out.bias"].__setitem__(0, float("nan")))), "NaN"),
    Case(
        "plus-inf",
        _bytes(lambda: edit_tensors(lambda t: t["adapters.1.up.weight"].__setitem__((0, 0), float("inf")))),
        "NaN or Inf",
    ),
    Case(
        "minus-inf",
        _bytes(lambda: edit_tensors(lambda t: t["norms.0.weight"].__setitem__(0, float("-inf")))),
        "NaN or Inf",
    ),
    Case("bit-flip-first-data-byte", _bytes(lambda: flip(VALID, 8 + _HL)), "sha256", True, IntegrityError),
    Case("bit-flip-middle", _bytes(lambda: flip(VALID, 8 + _HL + len(DATA) // 2, 3)), "sha256", True, IntegrityError),
    Case("bit-flip-last-byte", _bytes(lambda: flip(VALID, len(VALID) - 1, 7)), "sha256", True, IntegrityError),
    Case(
        "label-renamed-in-header",
        _bytes(lambda: VALID.replace(b'\\"neg\\"', b'\\"nfg\\"', 1)),
        "sha256",
        True,
        IntegrityError,
    ),
    Case("torch-pickle-zip", lambda p: torch.save({"x": torch.zeros(2)}, p), "header length"),
    Case("raw-pickle-exploit", _bytes(lambda: pickle.dumps(_Exploit())), "header length|truncated|not valid"),
    Case("zip-of-valid-bundle", lambda p: zipfile.ZipFile(p, "w").writestr("a.safetensors", VALID), "header length"),
    Case("symlink-to-valid", _symlink, "symbolic link"),
    Case("dangling-symlink", lambda p: p.symlink_to(p.with_name("nowhere")), "symbolic link"),
    Case("directory", lambda p: p.mkdir(), "not a regular file"),
    Case("fifo", lambda p: os.mkfifo(p), "not a regular file"),
    Case("sparse-over-1GiB", _sparse, "larger than any bundle"),
    Case("no-metadata", _bytes(lambda: edit_tensors(lambda t: None, metadata={})), "not a cadapt-bundle"),
    Case(
        "metadata-not-json",
        _bytes(lambda: edit_header(lambda h: h["__metadata__"].update(cadapt="{"))),
        "not valid JSON",
    ),
    Case(
        "metadata-not-strings",
        _bytes(lambda: edit_header(lambda h: h["__metadata__"].update(n=1))),
        "no string metadata",
    ),
    Case(
        "metadata-is-list",
        _bytes(lambda: edit_header(lambda h: h.__setitem__("__metadata__", []))),
        "no string metadata",
    ),
    Case("wrong-format", _bytes(lambda: edit_cadapt(lambda c: c.update(format="other"))), "not a cadapt-bundle"),
    Case(
        "future-format-version",
        _bytes(lambda: edit_cadapt(lambda c: c.update(format_version="2"))),
        "not a cadapt-bundle",
    ),
    Case("config-without-task", _bytes(lambda: edit_config(lambda c: c.pop("task"))), "malformed"),
    Case("config-is-list", _bytes(lambda: edit_cadapt(lambda c: c.update(config=[1]))), "malformed"),
    Case(
        "task-name-path-traversal", _bytes(lambda: edit_config(lambda c: c["task"].update(name="../evil"))), "malformed"
    ),
    Case("labels-duplicated", _bytes(lambda: edit_config(lambda c: c["task"].update(labels=["x", "x"]))), "malformed"),
    Case("head-unknown", _bytes(lambda: edit_config(lambda c: c["task"].update(head="evil"))), "malformed"),
    Case("adapter-not-object", _bytes(lambda: edit_config(lambda c: c["task"].update(adapter="big"))), "malformed"),
    Case("architecture-mismatch", _bytes(lambda: edit_config(lambda c: c.update(architecture="roberta"))), "built for"),
    Case("hidden-size-mismatch", _bytes(lambda: edit_config(lambda c: c.update(hidden_size=64))), "built for"),
    Case("layer-count-mismatch", _bytes(lambda: edit_config(lambda c: c.update(num_layers=12))), "built for"),
    Case(
        "other-base-weights",
        _bytes(lambda: edit_config(lambda c: c.update(base_sha256="0" * 64))),
        "trained on base weights",
        False,
        IntegrityError,
    ),
    Case(
        "huge-bottleneck-claim",
        _bytes(lambda: edit_config(lambda c: c["task"]["adapter"].update(bottleneck=10**9))),
        "claims bottleneck",
    ),
    Case(
        "bottleneck-mismatch",
        _bytes(lambda: edit_config(lambda c: c["task"]["adapter"].update(bottleneck=8))),
        "claims bottleneck",
    ),
    Case(
        "head-dropout-invalid", _bytes(lambda: edit_config(lambda c: c["task"].update(head_dropout=5))), "cannot build"
    ),
    Case(
        "thousand-labels",
        _bytes(lambda: edit_config(lambda c: c["task"].update(labels=[f"l{i}" for i in range(1000)]))),
        "head.out",
    ),
]


def check_bounded(action: Callable[[], None]) -> tuple[BaseException, float, int]:
    """Runs a rejection, returning the error, its wall time and the most memory it held beyond the
    start: Python allocations (tracemalloc) and the process's resident peak (torch's own)."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    started = time.perf_counter()
    try:
        action()
    except BundleError as exc:
        error = exc
    else:
        raise AssertionError("hostile bundle was accepted")
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    MEASURED.append((elapsed, max(peak, rss_growth)))
    return error, elapsed, max(peak, rss_growth)
