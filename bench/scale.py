"""A long stream, added one task at a time as a user would: does adding task 200 cost what task 2 did?

Each addition is a fresh `cadapt add-task` process (so its import time and peak memory are what a
user pays), on a small real subset (32 training and 32 evaluation examples, 1 epoch) of one of 22
datasets of the shared data folder taken in a cycle, so task 2 and task 200 train on the same
dataset. Per addition it records the wall time, the runner's own phase split (prepare / train /
confirm / register, from `--json`), the process's peak resident memory (wait4's ru_maxrss) and the
registry's size on disk. At checkpoints it times the interactive commands a user runs on a grown
registry: `tasks`, `show`, `report`, `audit --probe` and `predict --task auto`, each a fresh process.

Resumable: the JSON is rewritten after every addition and a rerun continues from the registry's
ready tasks (a pending row left by a killed addition is repaired first). What produced
docs/scale.md:

    python bench/scale.py --reeval probe --tasks 200 --out runs/scale/probe --json bench/results/scale_probe.json
    python bench/scale.py --reeval full --tasks 50 --out runs/scale/full --json bench/results/scale_full.json
    python bench/scale.py --plot docs/figures bench/results/scale_probe.json bench/results/scale_full.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from continual_adapters.data.reader import default_data_dir

#: 22 datasets in a fixed cycle; 198 = 9 x 22, so tasks 2 and 200 (and 1 and 199) share a dataset.
DATASETS = (
    "cola", "cr", "mpqa", "mr", "mrpc", "rte", "snips", "sst2", "subj", "trec", "tweeteval_emotion",
    "tweeteval_irony", "tweeteval_offensive", "long_cb", "long_copa", "long_wic", "long_sst2", "long_rte",
    "long_qqp", "long_mnli", "olora_agnews", "olora_dbpedia",
)  # fmt: skip
CHECKPOINTS = (1, 2, 10, 25, 50, 100, 150, 200)
PROBE_TEXT = "what is the capital of peru ?"


def task_name(index: int) -> str:
    return f"t{index:03d}_{DATASETS[(index - 1) % len(DATASETS)]}"


def run(args: list[str], registry: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """One cadapt command in a fresh process: (result, wall seconds, peak resident memory in MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "continual_adapters.cli", "--registry", str(registry), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    if result.returncode != 0:
        raise SystemExit(f"cadapt {' '.join(args)} failed ({result.returncode}):\n{err[-2000:]}")
    return result, wall, usage.ru_maxrss / 1024


def folder_bytes(root: Path) -> dict[str, int]:
    """Bytes on disk of the registry database and of each artifact folder."""
    sizes = {"database": sum(p.stat().st_size for p in root.glob("registry.db*") if p.is_file())}
    artifacts = root / "registry"  # the registry's artifact root beside registry.db: bundles/, probes/, ...
    for folder in sorted(p for p in artifacts.iterdir() if p.is_dir()) if artifacts.is_dir() else []:
        sizes[folder.name] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return sizes


def latencies(registry: Path) -> dict[str, dict[str, float]]:
    commands = {
        "tasks": ["tasks"],
        "show": ["show", task_name(1)],
        "report": ["report"],
        "audit_probe": ["audit", "--probe", "--json"],
        "predict_auto": ["predict", "--task", "auto", PROBE_TEXT],
    }
    out = {}
    for key, args in commands.items():
        _, wall, rss = run(args, registry)
        out[key] = {"wall_s": round(wall, 3), "peak_rss_mib": round(rss, 1)}
    return out


def grow(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    registry = out / "registry.db"
    results_path = Path(args.json)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    settings = vars(args) | {"checkpoints": sorted(args.checkpoints), "datasets": DATASETS}
    results.setdefault("settings", settings | {"python": sys.version.split()[0]})
    additions = {a["n"]: a for a in results.get("additions", [])}
    checks = {c["n"]: c for c in results.get("checkpoints", [])}
    if registry.exists():
        run(["fsck", "--repair"], registry)
        listing = json.loads(run(["tasks", "--json"], registry)[0].stdout)
        done = len(listing)
    else:
        done = 0
    data_dir = Path(args.data_dir)
    for n in range(done + 1, args.tasks + 1):
        name = task_name(n)
        add = [
            "add-task", name, "--data", str(data_dir / DATASETS[(n - 1) % len(DATASETS)]),
            "--max-train", str(args.max_train), "--max-eval", str(args.max_eval), "--epochs", "1",
            "--reeval", args.reeval, "--json", "--quiet", *(["--encoder", args.encoder] if args.encoder else []),
        ]  # fmt: skip
        result, wall, rss = run(add, registry)
        payload = json.loads(result.stdout)
        additions[n] = {
            "n": n,
            "task": name,
            "dataset": DATASETS[(n - 1) % len(DATASETS)],
            "wall_s": round(wall, 3),
            "peak_rss_mib": round(rss, 1),
            "timings_s": payload["timings_s"],
            "confirmation": payload["confirmation"],
            "confirmed": len(payload["probes"]) + len(payload["reevaluated"]),
            "disk_bytes": folder_bytes(out),
        }
        line = f"{name}: {wall:.1f} s, {rss:.0f} MiB, " + ", ".join(
            f"{k} {v:.1f}" for k, v in payload["timings_s"].items()
        )
        if n in args.checkpoints or n == args.tasks:
            checks[n] = {"n": n, **latencies(registry)}
            line += " | " + ", ".join(f"{k} {v['wall_s']:.1f} s" for k, v in checks[n].items() if k != "n")
        print(line, flush=True)
        results["additions"] = [additions[k] for k in sorted(additions)]
        results["checkpoints"] = [checks[k] for k in sorted(checks)]
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(results_path)


def plot(paths: list[Path], folder: Path) -> list[Path]:
    """Four panels against N: per-addition wall time (probe split into its phases; full as one
    line), peak memory, registry size, and the interactive commands' latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {json.loads(p.read_text())["settings"]["reeval"]: json.loads(p.read_text()) for p in paths}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    time_ax, memory_ax, disk_ax, latency_ax = axes.flat
    for policy, run in runs.items():
        adds = run["additions"]
        n = [a["n"] for a in adds]
        time_ax.plot(n, [a["wall_s"] for a in adds], label=f"--reeval {policy}: wall per addition", lw=1.2)
        memory_ax.plot(n, [a["peak_rss_mib"] for a in adds], label=f"--reeval {policy}", lw=1)
        disk_ax.plot(n, [sum(a["disk_bytes"].values()) / 2**20 for a in adds], label=f"--reeval {policy}: all")
        if policy == "probe":
            for phase in ("prepare", "train", "confirm"):
                time_ax.plot(n, [a["timings_s"][phase] for a in adds], label=f"probe: {phase}", lw=0.8, alpha=0.8)
            for part in ("bundles", "probes", "centroids", "database"):
                disk_ax.plot(n, [a["disk_bytes"].get(part, 0) / 2**20 for a in adds], label=part, lw=0.8)
            checks = run["checkpoints"]
            for command in ("tasks", "show", "report", "audit_probe", "predict_auto"):
                latency_ax.plot(
                    [c["n"] for c in checks], [c[command]["wall_s"] for c in checks], marker="o", label=command
                )
    for ax, title, unit in (
        (time_ax, "seconds per `cadapt add-task` (one process each)", "s"),
        (memory_ax, "peak resident memory of `add-task`", "MiB"),
        (disk_ax, "registry on disk", "MiB"),
        (latency_ax, "interactive commands (one process each)", "s"),
    ):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("tasks in the registry (N)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    memory_ax.set_ylim(bottom=0)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "scale.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]


def summary(path: Path, same_dataset: tuple[int, ...] = (2, 24, 200)) -> str:
    """Markdown rows for docs/scale.md: the additions on one dataset at several N, and latencies."""
    run = json.loads(path.read_text())
    adds = {a["n"]: a for a in run["additions"]}
    rows = ["| N | dataset | wall (s) | prepare | train | confirm | register | peak RSS (MiB) | registry (MiB) |"]
    rows.append("|---|---|---|---|---|---|---|---|---|")
    for n in same_dataset:
        if n in adds:
            a, t = adds[n], adds[n]["timings_s"]
            rows.append(
                f"| {n} | {a['dataset']} | {a['wall_s']:.1f} | {t['prepare']:.1f} | {t['train']:.1f} | "
                f"{t['confirm']:.2f} | {t['register']:.2f} | {a['peak_rss_mib']:.0f} | "
                f"{sum(a['disk_bytes'].values()) / 2**20:.1f} |"
            )
    rows += ["", "| N | tasks | show | report | audit --probe | predict --task auto |", "|---|---|---|---|---|---|"]
    for c in run["checkpoints"]:
        rows.append(
            f"| {c['n']} | "
            + " | ".join(f"{c[k]['wall_s']:.1f} s" for k in ("tasks", "show", "report", "audit_probe", "predict_auto"))
            + " |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--reeval", choices=("probe", "full"), default="probe")
    parser.add_argument("--out", default="runs/scale/probe", help="Folder of the registry (not committed).")
    parser.add_argument("--json", default="bench/results/scale_probe.json")
    parser.add_argument("--data-dir", default=str(default_data_dir() or "../shared/data"))
    parser.add_argument("--max-train", type=int, default=32)
    parser.add_argument("--max-eval", type=int, default=32)
    parser.add_argument("--encoder", default=None, help="Base encoder [the default, MiniLM].")
    parser.add_argument(
        "--checkpoints",
        type=lambda text: {int(v) for v in text.split(",")},
        default=set(CHECKPOINTS),
        help="N at which to time the interactive commands (and always the last).",
    )
    parser.add_argument("--plot", metavar="FOLDER", help="Draw the figures from the JSON files given, and stop.")
    parser.add_argument("results", nargs="*", help="With --plot: result JSON files.")
    args = parser.parse_args()
    if args.plot:
        for path in plot([Path(p) for p in args.results], Path(args.plot)):
            print(f"wrote {path}")
        for path in args.results:
            print(f"\n{path}:\n\n{summary(Path(path))}")
        return
    grow(args)


if __name__ == "__main__":
    main()
