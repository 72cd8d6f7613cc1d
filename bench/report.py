"""What bench/bench.py makes of the workers' results: the per-setup summary, the goals and the table.

Kept apart from the driver (which spawns the workers and parses the command line) because this
part is pure: it turns result dictionaries into numbers and text, needs neither torch nor a
subprocess, and is what the tests check on synthetic results without running a benchmark.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from setups import REAL_SETUPS


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def aggregate(runs: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for setup, results in runs.items():
        ok = [r for r in results if r.get("status") == "ok"]
        if not ok:
            out[setup] = {
                "status": results[0].get("status", "error"),
                "reason": results[0].get("reason", ""),
                "rounds": results,
            }
            continue
        median = statistics.median(r["median_ms"] for r in ok)
        entry = {
            "status": "ok",
            "median_ms": median,
            "round_medians_ms": [r["median_ms"] for r in ok],
            "clock": ok[0].get("clock", "wall"),
            "wall_median_ms": statistics.median(r.get("wall_median_ms", r["median_ms"]) for r in ok),
            "cpu_median_ms": statistics.median(r.get("cpu_median_ms", r["median_ms"]) for r in ok),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in ok),
            "peak_mb": statistics.median(r["peak_mb"] for r in ok),
            "rounds": results,
        }
        for key in (
            "trainable",
            "fast_path",
            "compile_mode",
            "optimizer",
            "attn_implementation",
            "adapterhub_bottleneck",
            "memory_method",
            "train_tokens",
            "examples",
            "steps",
            "mean_length",
            "pad_to_max_length",
            "versions",
        ):
            if key in ok[0]:
                entry[key] = ok[0][key]
        entry["first_step_s"] = statistics.median(r.get("first_step_s", r.get("wall_time_s", 0)) for r in ok)
        out[setup] = entry
    return out


def goals(summary: dict, device: str) -> dict:
    def ms(name):
        entry = summary.get(name, {})
        return entry.get("median_ms") if entry.get("status") == "ok" else None

    def tps(name):
        entry = summary.get(name, {})
        return entry.get("tokens_per_s") if entry.get("status") == "ok" else None

    def mem(name):
        entry = summary.get(name, {})
        return entry.get("peak_mb") if entry.get("status") == "ok" else None

    best_cadapt = min((v for v in (ms("cadapt"), ms("cadapt_compiled"), ms("cadapt_fused_adamw")) if v), default=None)
    best_infer = max((v for v in (tps("cadapt_infer"), tps("cadapt_compiled_infer")) if v), default=None)
    floor_ref = ms("floor_compiled") if device == "cuda" else ms("floor")
    limit = 1.2 if device == "cuda" else 1.05
    rows = {
        "train_vs_floor": {
            "goal": f"<= {limit}x the {'compiled ' if device == 'cuda' else ''}floor",
            "value": _ratio(best_cadapt, floor_ref),
            "limit": limit,
            "kind": "max",
        },
        "train_vs_floor_eager_both": {
            "goal": "info: eager cadapt / eager floor",
            "value": _ratio(ms("cadapt"), ms("floor")),
            "kind": "info",
        },
        "train_compiled_vs_floor_compiled": {
            "goal": "info: compiled cadapt / compiled floor",
            "value": _ratio(ms("cadapt_compiled"), ms("floor_compiled")),
            "kind": "info",
        },
        "inference_vs_bare": {
            "goal": ">= 0.95x the bare model's throughput",
            "value": _ratio(best_infer, tps("bare_infer")),
            "limit": 0.95,
            "kind": "min",
        },
        "inference_eager_vs_bare": {
            "goal": "info: eager cadapt inference / bare",
            "value": _ratio(tps("cadapt_infer"), tps("bare_infer")),
            "kind": "info",
        },
        "inference_compiled_vs_bare_compiled": {
            "goal": "info: compiled cadapt inference / compiled bare",
            "value": _ratio(tps("cadapt_compiled_infer"), tps("bare_compiled_infer")),
            "kind": "info",
        },
        "real_dynamic_vs_padded": {
            "goal": ">= 2x the padded throughput (real tokens/s)",
            "value": _ratio(tps("real_dynamic"), tps("real_padded")),
            "limit": 2.0,
            "kind": "min",
        },
        "adapterhub_vs_its_floor": {
            "goal": "info: AdapterHub / the floor in AdapterHub's interpreter",
            "value": _ratio(ms("adapterhub"), ms("adapterhub_env_floor") or ms("floor")),
            "kind": "info",
        },
        "peft_lora_vs_floor": {
            "goal": "info: PEFT LoRA / floor",
            "value": _ratio(ms("peft_lora"), ms("floor")),
            "kind": "info",
        },
        "memory_vs_floor": {
            "goal": "peak training memory <= the floor's + 10%",
            "value": _ratio(mem("cadapt"), mem("floor")),
            "limit": 1.10,
            "kind": "max",
        },
    }
    for row in rows.values():
        value = row["value"]
        if row["kind"] == "info" or value is None:
            row["met"] = None
        else:
            row["met"] = value <= row["limit"] if row["kind"] == "max" else value >= row["limit"]
    return rows


def format_table(summary: dict, goal_rows: dict, meta: dict) -> str:
    lines = [
        f"device: {meta['device_name']}  model: {meta['model']}  batch {meta['batch']} x seq {meta['seq']}"
        f"  dtype: {meta['dtype']}  bottleneck: {meta['bottleneck']}  rounds: {meta['rounds']}"
        f"  steps: {meta['steps']}  load: {meta['load_before']} -> {meta['load_after']}",
        f"ms/step, tokens/s and 'vs ref' use the {meta.get('clock', 'wall')} clock; wall ms is shown beside it",
    ]
    header = (
        f"{'setup':<24} {'status':<8} {'ms/step':>10} {'wall ms':>10} {'tokens/s':>11} {'vs ref':>8} "
        f"{'peak MB':>9}  note"
    )
    lines += [header, "-" * len(header)]
    for setup, entry in summary.items():
        if entry.get("status") != "ok":
            lines.append(
                f"{setup:<24} {entry.get('status', 'error'):<8} {'':>10} {'':>10} {'':>11} {'':>8} {'':>9}  "
                f"{entry.get('reason', '')[:90]}"
            )
            continue
        env = setup.startswith("adapterhub") and "adapterhub_env_floor" in summary
        if setup.endswith("_infer"):
            ref_name = "adapterhub_env_bare_infer" if env else "bare_infer"
            rel = _ratio(entry["tokens_per_s"], summary.get(ref_name, {}).get("tokens_per_s"))
            note = f"throughput vs {ref_name}"
        elif setup in REAL_SETUPS:
            rel = _ratio(entry["tokens_per_s"], summary.get("real_padded", {}).get("tokens_per_s"))
            note = f"{entry.get('examples')} ex, {entry.get('steps')} steps, real tokens/s vs real_padded"
        else:
            ref_name = "adapterhub_env_floor" if env else "floor"
            rel = _ratio(entry["median_ms"], summary.get(ref_name, {}).get("median_ms"))
            note = f"time vs {ref_name}"
        if setup.startswith("adapterhub") and entry.get("versions"):
            note += f" (transformers {entry['versions'].get('transformers')})"
        if "compiled" in setup:
            note += f"; compile+first step {entry['first_step_s']:.1f}s"
        lines.append(
            f"{setup:<24} {'ok':<8} {entry['median_ms']:>10.1f} "
            f"{entry.get('wall_median_ms', entry['median_ms']):>10.1f} {entry['tokens_per_s']:>11.0f} "
            f"{'' if rel is None else f'{rel:.3f}x':>8} {entry['peak_mb']:>9.0f}  {note}"
        )
    lines.append("")
    lines.append("goals:")
    for name, row in goal_rows.items():
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        verdict = {True: "MET", False: "NOT MET", None: ""}[row["met"]]
        lines.append(f"  {name:<34} {value:>7}  {row['goal']}  {verdict}")
    return "\n".join(lines)


def write_json(path: str, meta: dict, summary: dict, goal_rows: dict, table: str) -> None:
    """Everything the run measured, and the table as printed, for docs/performance.md and later comparison."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(
        json.dumps({"meta": meta, "setups": summary, "goals": goal_rows, "table": table}, indent=2) + "\n"
    )
