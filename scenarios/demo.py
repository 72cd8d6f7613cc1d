"""The README's main job: a real three-task stream on the default encoder, into ./registry.db.

Re-running it adds only the tasks that are missing, so it never clobbers a registry.
Data comes from --data-dir / CADAPT_DATA_DIR, default ../shared/data.
"""
from __future__ import annotations

import argparse
import sys

import torch

from continual_adapters.cli import cli
from continual_adapters.data import default_data_dir
from continual_adapters.registry import Registry

STREAM = ("sst2", "trec", "tweeteval_emotion")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--registry", default="registry.db")
    parser.add_argument("--max-train", type=int, default=800)
    parser.add_argument("--max-eval", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        sys.exit("Error: no data directory; pass --data-dir or set CADAPT_DATA_DIR")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    registry = Registry(args.registry)
    registry.init()
    done = {t.name for t in registry.tasks(include_retired=True, include_pending=True)}
    for name in STREAM:
        if name in done:
            print(f"{name}: already in {args.registry}, skipped")
            continue
        print(f"== adding {name}", flush=True)
        cli.main(["--registry", args.registry, "add-task", name, "--data", name, "--data-dir", str(data_dir),
                  "--max-train", str(args.max_train), "--max-eval", str(args.max_eval),
                  "--epochs", str(args.epochs), "--lr", "3e-3"], standalone_mode=False)
    print("\n== tasks")
    cli.main(["--registry", args.registry, "tasks"], standalone_mode=False)
    names, matrix = registry.accuracy_matrix()
    print("\n== accuracy matrix R[i][j] (row: after training task i; column: task j)")
    width = max(len(n) for n in names) + 8
    print(" " * width + "".join(f"{n[:10]:>11}" for n in names))
    for name, row in zip(names, matrix):
        print(f"{'after ' + name:<{width}}" + "".join(f"{'' if v is None else f'{v:.4f}':>11}" for v in row))
    print(f"\n== proof for {names[-1]}")
    cli.main(["--registry", args.registry, "show", names[-1]], standalone_mode=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
