"""How large EWC's penalty is when nothing holds the encoder: the scale `DEFAULT_EWC_LAMBDA` is set by.

Trains SST-2 then AG News (600 training examples each, 2 epochs, lr 1e-4, the text_stream budget)
with `--method ewc` at lambda 0, so the second task moves the shared encoder freely, and reports the
running Fisher's sum after SST-2, the squared drift, and sum_i F_i (theta_i - theta*_i)^2: the
penalty that drift would have cost at lambda = 2. A lambda whose lambda / 2 * penalty is about the
size of a task's cross-entropy (0.1-1) makes the pull matter without freezing the encoder.

    python bench/ewc_scale.py --json bench/results/ewc_scale.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from continual_adapters.core.config import MethodOptions, TrainConfig
from continual_adapters.data.reader import default_data_dir
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry import Registry
from continual_adapters.stream.runner import Runner
from continual_adapters.training.ewc import parse_fisher


def measure(data: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    config = TrainConfig(epochs=2, batch_size=32, max_length=128, lr=1e-4)
    options = MethodOptions(ewc_lambda=0.0)
    with tempfile.TemporaryDirectory() as folder:
        registry = Registry(Path(folder) / "registry.db")
        runner = Runner(registry, progress=False, method="ewc")
        runner.add_task(
            "sst2", DataSpec.from_folder(data / "sst2", max_train=600, max_eval=300), train=config, options=options
        )
        encoder = runner.model.task_modules("sst2").encoder
        before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
        fisher = parse_fisher(registry.read_artifact("sst2", "fisher"), "fisher of sst2")
        agnews = DataSpec.from_folder(data / "olora_agnews", max_train=600, max_eval=300)
        runner.add_task("agnews", agnews, train=config, options=options)
        after = dict(runner.model.task_modules("agnews").encoder.named_parameters())
        penalty = sum(float((fisher[f"encoder.{n}"] * (after[n] - before[n]).pow(2)).sum()) for n in before)
        return {
            "tasks": ["sst2", "agnews"],
            "fisher_sum": sum(float(v.sum()) for v in fisher.values()),
            "drift_squared": sum(float((after[n] - before[n]).pow(2).sum()) for n in before),
            "penalty_sum": penalty,
            "penalty_at_lambda": {f"{lam:g}": lam / 2 * penalty for lam in (1e3, 1e4, 1e5, 1e6)},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(Path(args.data_dir), args.threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
