"""A long stream in minutes, for profiling the commands that read it: N tasks added in one process
with the tiny random encoder (core/encoder.py `save_tiny_encoder`) on 16 training and 16 evaluation
examples of shared datasets in a cycle, 1 epoch, under the default `--reeval probe`.

The registry is real where it matters for reads: every addition writes an evaluation row per metric
for every earlier task, so the evaluations table holds about 3 N^2 / 2 rows, beside N bundles,
probes and centroids. The scores mean nothing. `bench/scale.py` is the real bench (MiniLM, a fresh
process per addition, about an hour at 200 tasks); this is for finding where `cadapt report` or
`cadapt audit --probe` spend their time on a 200-task registry (issue 19):

    python bench/tiny_stream.py runs/tiny200 --tasks 200          # about 3 minutes on 2 cores
    python -m cProfile -s cumulative -m continual_adapters.cli --registry runs/tiny200/registry.db report
    python -m continual_adapters.cli --registry runs/tiny200/registry.db audit --probe

Resumable: tasks already registered are skipped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.encoder import save_tiny_encoder
from continual_adapters.data.reader import default_data_dir
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry import Registry
from continual_adapters.stream.runner import Runner

DATASETS = ("cr", "mpqa", "mr", "sst2", "subj", "trec", "tweeteval_emotion", "tweeteval_irony", "snips", "cola")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="Folder for registry.db, its artifacts and the tiny encoder.")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, default=None, help="The shared data folder (default: cadapt's).")
    parser.add_argument("--examples", type=int, default=16, help="Training and evaluation examples per task.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        parser.error("no data folder: pass --data-dir or set CADAPT_DATA_DIR")
    registry = Registry(args.out / "registry.db")
    registry.init()
    runner = Runner(registry, encoder=save_tiny_encoder(args.out / "tiny-encoder"), progress=False)
    done = {task.name for task in registry.tasks()}
    config = TrainConfig(epochs=1, batch_size=16, max_length=32)
    started = time.perf_counter()
    for n in range(1, args.tasks + 1):
        dataset = DATASETS[(n - 1) % len(DATASETS)]
        name = f"t{n:03d}_{dataset}"
        if name in done:
            continue
        spec = DataSpec.from_folder(data_dir / dataset, max_train=args.examples, max_eval=args.examples)
        runner.add_task(name, spec, train=config)
        if n % 10 == 0:
            print(f"{n} tasks, {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
