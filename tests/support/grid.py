"""A tiny scenario grid (two tasks, two methods, one seed, the tiny encoder) and a private local Ray
for the executor tests: every unit trains in seconds, so the tests measure the executors, not
the training."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Each tiny dataset's labels; rows are numbered so every text differs.
TASKS = {"one": ["neg", "pos"], "two": ["a", "b", "c"]}
SIZES = {"train": 12, "validation": 10, "test": 8}
METHODS = {"adapters": {"adapter_size": 8}, "naive": {"lr": 1.0e-3}}


def write_grid(root: Path, encoder: str) -> Path:
    """Two dataset folders in the shared layout and a scenario over them; returns the scenario file."""
    tasks = []
    for name, labels in TASKS.items():
        folder = root / f"data-{name}"
        folder.mkdir(parents=True)
        for split, count in SIZES.items():
            rows = [
                {"text": f"{labels[i % len(labels)]} {name} {split} {i}", "label": labels[i % len(labels)]}
                for i in range(count)
            ]
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "dataset.json").write_text(json.dumps({"labels": labels, "pair": False}))
        tasks.append({"name": name, "data": str(folder)})
    path = root / "grid.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "grid",
                "encoder": encoder,
                "seeds": [0],
                "train": {"epochs": 1, "batch_size": 8, "max_length": 16},
                "methods": METHODS,
                "tasks": tasks,
            }
        )
    )
    return path


def timeless(data: dict[str, Any]) -> dict[str, Any]:
    """A comparison with its wall times (which differ between any two runs) and figure paths zeroed."""
    data = json.loads(json.dumps(data))
    data.pop("plots", None)
    for method in data["methods"]:
        method["train_seconds"] = 0.0
        for run in method.get("runs", []):
            run["train_seconds"] = 0.0
    return data


def local_ray() -> Iterator[Any]:
    """A Ray of this test's own (never one another process started: `address="local"`), two CPUs,
    no dashboard, worker logs kept out of the test's output; shut down when the fixture ends."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
