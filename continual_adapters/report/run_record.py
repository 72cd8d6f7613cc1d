"""One run's numbers as a small JSON file that outlives its run folder.

A long run's folder (registry, bundles, up to a GB) lives outside the repository and dies with
the machine that holds it; what a comparison needs from it fits in a few kilobytes. A record keeps
`run_summary()`'s output (report/comparison.py) whole, its per-example correctness packed to one
bit per example, plus whatever the caller adds (task identification, wall times), so that
`method_row()` can rebuild a method's row, intervals included, from committed records alone.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from continual_adapters.core.errors import RecordError
from continual_adapters.files.atomic import atomic_write

#: Bumped when a record's layout changes; a reader refuses other versions rather than misread them.
RECORD_FORMAT = 1


def pack_correct(vectors: list[np.ndarray] | None) -> list[dict] | None:
    """Per task, its 0/1 correctness vector as {examples, bits}: numpy's packbits in base64."""
    if vectors is None:
        return None
    packed = []
    for vector in vectors:
        flags = np.asarray(vector)
        if flags.size and not np.isin(flags, (0, 1)).all():
            raise RecordError("a run's per-example correctness must be 0 or 1 (a seed average is not a run's)")
        bits = np.packbits(flags.astype(np.uint8))
        packed.append({"examples": int(flags.size), "bits": base64.b64encode(bits.tobytes()).decode("ascii")})
    return packed


def unpack_correct(packed: list[dict] | None) -> list[np.ndarray] | None:
    """The inverse of `pack_correct`."""
    if packed is None:
        return None
    vectors = []
    for entry in packed:
        raw = np.frombuffer(base64.b64decode(entry["bits"]), dtype=np.uint8)
        n = int(entry["examples"])
        if raw.size != (n + 7) // 8:
            raise RecordError(f"packed correctness holds {raw.size} bytes, not the {(n + 7) // 8} of {n} examples")
        vectors.append(np.unpackbits(raw)[:n])
    return vectors


def write_run_record(path: str | Path, summary: dict, **extra: Any) -> Path:
    """Write `summary` (one run_summary(), its `correct` included) and `extra` to `path`, atomically."""
    body = {key: value for key, value in summary.items() if key != "correct"}
    record = {"format": RECORD_FORMAT, "summary": body, "correct": pack_correct(summary.get("correct")), **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(record, indent=1, sort_keys=True, default=float) + "\n").encode())
    return path


def read_run_record(path: str | Path) -> dict:
    """A record as written, with its summary's `correct` unpacked again (ready for `method_row`)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: not a readable run record ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise RecordError(f"{path}: run record format {record.get('format')!r}, this cadapt reads {RECORD_FORMAT}")
    record["summary"]["correct"] = unpack_correct(record.pop("correct"))
    return record
