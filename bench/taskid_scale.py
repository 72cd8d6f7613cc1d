"""Task identification (`--task auto`) as the number of tasks grows: 10, 25, 50, 100 and 152 tasks.

Tasks are cut from the shared datasets so that many share a domain: CLINC150's 150 intents in 75
tasks of 2 (10 domains), BANKING77's 77 intents in 38 tasks of 2 (one domain, the hardest case),
DBpedia's 14 classes in 7 tasks, SNIPS, TREC, AG News and TweetEval-emotion in tasks of 2-3 labels,
and the 22 other datasets whole (sentiment appears six times, NLI and paraphrase several times):
152 distinct tasks, which is as many as the shared data holds without repeating a distribution
(two tasks drawn from the same examples cannot be told apart by any router, so none are made).

Every router sees only what the registry stores: per-label statistics of the frozen encoder's
features on each task's training rows (`stream/taskid.py`), computed by the product's own code.
For each size, 3 random draws of tasks; accuracy is the share of test rows routed to their task.
The shrinkage of the pooled covariance is chosen on validation rows only. A logistic regression
over the raw training features (which the registry does not keep) is the reference for what a
trained router could reach.

    python bench/taskid_scale.py --json bench/results/taskid_scale.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from continual_adapters.core.baselines import model_for_method
from continual_adapters.data.reader import default_data_dir
from continual_adapters.data.taskdata import DataSpec, load_task_data
from continual_adapters.stream.taskid import TaskIdentifier, base_features, label_statistics

SIZES = (10, 25, 50, 100, 152)
DRAWS = 3
SHRINKAGES = (0.01, 0.03, 0.1, 0.3, 0.6)
ROWS = {"train": 120, "validation": 30, "test": 50}
#: dataset -> labels per task; datasets not listed are whole tasks.
SPLIT = {"clinc150": 2, "banking77": 2, "olora_dbpedia": 2, "snips": 2, "trec": 2, "olora_agnews": 2,
         "tweeteval_emotion": 2}  # fmt: skip


def task_pool(data_dir: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(task name, dataset, its labels): label groups in the dataset's own label order."""
    pool = []
    for folder in sorted(p for p in data_dir.iterdir() if (p / "dataset.json").is_file()):
        labels = tuple(json.loads((folder / "dataset.json").read_text())["labels"])
        size = SPLIT.get(folder.name)
        if size is None:
            pool.append((folder.name, folder.name, labels))
            continue
        groups = [labels[i : i + size] for i in range(0, len(labels), size)]
        if len(groups[-1]) < 2:  # an odd label out joins the previous group
            groups[-2:] = [groups[-2] + groups[-1]]
        pool += [(f"{folder.name}_{i:02d}", folder.name, group) for i, group in enumerate(groups)]
    return pool


def features(model, data_dir: Path, cache: Path) -> dict[str, dict[str, torch.Tensor | list[str]]]:
    """Base features of each task's rows per split (cached: the encoder pass is most of the time)."""
    if cache.exists():
        return torch.load(cache, weights_only=False)
    out: dict[str, dict] = {}
    loaded: dict[str, object] = {}
    for name, dataset, labels in task_pool(data_dir):
        if dataset not in loaded:
            loaded[dataset] = load_task_data(DataSpec.from_folder(data_dir / dataset))
        data = loaded[dataset]
        entry: dict[str, torch.Tensor | list[str]] = {}
        for split, cap in ROWS.items():
            part = {"train": data.train, "validation": data.validation, "test": data.evaluation}[split]
            keep = [i for i, label in enumerate(part.labels) if str(label) in labels]
            keep = random.Random(f"{name}/{split}").sample(keep, min(cap, len(keep)))
            texts = [part.texts[i] for i in keep]
            pairs = [part.pairs[i] for i in keep] if part.pairs else None
            entry[split] = base_features(model, texts, pairs)
            entry[f"{split}_labels"] = [str(part.labels[i]) for i in keep]
        out[name] = entry
        print(f"features: {name} ({len(entry['train_labels'])} train rows)", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def accuracy(router, feats: dict, names: list[str], split: str) -> float:
    rows = torch.cat([feats[n][split] for n in names])
    truth = [n for n in names for _ in range(len(feats[n][split]))]
    guessed = router(rows)
    return sum(g == t for g, t in zip(guessed, truth, strict=True)) / len(truth)


def logistic(feats: dict, names: list[str]):
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([feats[n]["train"] for n in names]).numpy()
    y = [n for n in names for _ in range(len(feats[n]["train"]))]
    clf = LogisticRegression(max_iter=300, C=10.0).fit(x, y)
    return lambda rows: list(clf.predict(rows.numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(default_data_dir() or "../shared/data"))
    parser.add_argument("--cache", default="runs/taskid/features.pt")
    parser.add_argument("--json", default="bench/results/taskid_scale.json")
    args = parser.parse_args()
    started = time.perf_counter()
    model = model_for_method("adapters")
    feats = features(model, Path(args.data_dir), Path(args.cache))
    stats = {n: label_statistics(f["train"], f["train_labels"]) for n, f in feats.items()}
    pool = sorted(feats)
    draws = {size: [random.Random(f"{size}/{d}").sample(pool, size) for d in range(DRAWS)] for size in SIZES}

    def maha(names, shrinkage):
        return TaskIdentifier({n: stats[n] for n in names}, "mahalanobis", shrinkage).predict

    # the shrinkage is chosen on validation rows, over every draw of every size, then fixed
    validation = {
        s: statistics.mean(accuracy(maha(names, s), feats, names, "validation") for d in draws.values() for names in d)
        for s in SHRINKAGES
    }
    chosen = max(validation, key=validation.__getitem__)
    rows = []
    for size, size_draws in draws.items():
        row: dict[str, object] = {"tasks": size, "chance": 1 / size}
        for label, make in (
            ("centroid", lambda names: TaskIdentifier({n: stats[n] for n in names}, "centroid").predict),
            ("mahalanobis", lambda names: maha(names, chosen)),
            ("logistic_regression", lambda names: logistic(feats, names)),
        ):
            scores = [accuracy(make(names), feats, names, "test") for names in size_draws]
            row[label] = {"mean": statistics.mean(scores), "std": statistics.stdev(scores), "draws": scores}
        rows.append(row)
        print(
            f"{size:>4} tasks: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in row.items() if isinstance(v, dict)),
            flush=True,
        )
    result = {
        "settings": {"sizes": SIZES, "draws": DRAWS, "rows_per_task": ROWS, "split": SPLIT, "pool": len(pool)},
        "shrinkage": {"grid": validation, "chosen": chosen},
        "results": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
