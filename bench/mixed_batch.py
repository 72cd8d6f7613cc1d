#!/usr/bin/env python
"""Serving many tasks: one mixed batch through `forward_mixed` vs looping over the tasks.

A batch of real sentences (SST-2 from ../shared/data, else generated text) is spread over T
tasks at random. "loop" runs the encoder once per task on that task's rows (what a server
without per-row routing does); "mixed" runs it once for the whole batch with per-row adapter,
LayerNorm and head routing. Both give the same logits (tests/test_model.py); this measures
the time. Prints a table and writes JSON (versions, device, load) to bench/results/.

    python bench/mixed_batch.py                       # MiniLM-L6, T in 1 2 4 8, batch 64
    python bench/mixed_batch.py --quick               # tiny random encoder, CI smoke (no timing claims)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from continual_adapters.core.config import AdapterConfig, TaskSpec  # noqa: E402
from continual_adapters.core.model import ContinualModel  # noqa: E402


def sentences(count: int) -> list[str]:
    path = Path(os.environ.get("CADAPT_DATA_DIR", ROOT.parent / "shared" / "data")) / "sst2" / "test.jsonl"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()[:count]
        return [json.loads(line)["text"] for line in lines]
    return [" ".join(f"word{(i * 7 + j) % 50}" for j in range(5 + i % 20)) for i in range(count)]


def build(quick: bool, tasks: int) -> ContinualModel:
    if quick:
        import tempfile

        from continual_adapters.core.encoder import save_tiny_encoder

        model = ContinualModel.from_pretrained(save_tiny_encoder(tempfile.mkdtemp(prefix="cadapt-tiny-")))
    else:
        model = ContinualModel.from_pretrained()
    generator = torch.Generator().manual_seed(0)
    for t in range(tasks):
        model.add_task(
            TaskSpec(f"task{t}", labels=tuple(f"l{i}" for i in range(2 + t % 3)), adapter=AdapterConfig(bottleneck=64))
        )
        with torch.no_grad():
            for param in model.task_modules(f"task{t}").parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


@torch.inference_mode()
def loop(model, batch, names):
    for name in dict.fromkeys(names):
        rows = [i for i, n in enumerate(names) if n == name]
        model(batch["input_ids"][rows], batch["attention_mask"][rows], batch["token_type_ids"][rows], task=name)


@torch.inference_mode()
def mixed(model, batch, names):
    model.forward_mixed(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], tasks=names)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mixed_batch.json"))
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeats, args.batch = [1, 3], 2, 8
    torch.manual_seed(0)
    texts = sentences(args.batch)
    rows = []
    for count in args.tasks:
        model = build(args.quick, count)
        batch = model.tokenize(texts, max_length=128)
        names = [f"task{random.Random(i).randrange(count)}" for i in range(len(texts))]
        loop(model, batch, names)
        mixed(model, batch, names)
        t_loop = timed(partial(loop, model, batch, names), args.repeats)
        t_mixed = timed(partial(mixed, model, batch, names), args.repeats)
        rows.append(
            {
                "tasks": count,
                "batch": len(texts),
                "loop_ms": 1000 * t_loop,
                "mixed_ms": 1000 * t_mixed,
                "speedup": t_loop / t_mixed,
            }
        )
    print(f"{'tasks':>5} {'batch':>5} {'loop ms':>9} {'mixed ms':>9} {'speed-up':>8}")
    for r in rows:
        print(f"{r['tasks']:>5} {r['batch']:>5} {r['loop_ms']:>9.1f} {r['mixed_ms']:>9.1f} {r['speedup']:>7.2f}×")
    import transformers

    result = {
        "benchmark": "mixed_batch",
        "quick": args.quick,
        "rows": rows,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
