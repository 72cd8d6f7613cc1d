"""Turning registry records into what people read: task details now, stream reports later."""
from __future__ import annotations

from .registry import Registry


def task_details(registry: Registry, name: str) -> dict:
    task = registry.task(name)
    details = {"name": task.name, "position": task.position, "status": task.status, "method": task.method,
               "head": task.head, "labels": task.labels, "metric": task.primary_metric,
               "data": task.data, "created_at": task.created_at.isoformat()}
    if task.status == "ready":
        bundle = registry.bundle(name)
        details["bundle"] = {"path": bundle.path, "sha256": bundle.sha256, "size_bytes": bundle.size_bytes,
                             "param_counts": bundle.param_counts, "seed": bundle.seed,
                             "hyperparameters": bundle.hyperparameters, "library_versions": bundle.library_versions,
                             "git_commit": bundle.git_commit, "wall_time_s": bundle.wall_time_s}
    details["evaluations"] = [{"after_tasks": e.after_tasks, "split": e.split, "metric": e.metric,
                               "value": e.value, "kind": e.kind, "predictions_sha256": e.predictions_sha256}
                              for e in registry.evaluations(name)]
    if task.proof:
        details["proof"] = {k: v for k, v in task.proof.items() if k != "golden"}
    return details


def format_task_details(d: dict) -> str:
    lines = [f"task {d['name']} (#{d['position'] or '-'}, {d['status']}, {d['method']}, {d['head']})",
             f"  labels ({len(d['labels'])}): {', '.join(d['labels'][:12])}{' …' if len(d['labels']) > 12 else ''}",
             f"  evaluated on: {d['data'].get('eval_split')} "
             f"({d['data'].get('sizes', {}).get(d['data'].get('eval_split'), '?')} examples)"]
    bundle = d.get("bundle")
    if bundle:
        counts = bundle["param_counts"]
        lines += [f"  bundle: {bundle['path']} ({bundle['size_bytes']:,} bytes)",
                  f"  sha256: {bundle['sha256']}",
                  f"  parameters: adapter {counts['adapter']:,}, layer norm {counts['layer_norm']:,}, "
                  f"head {counts['head']:,} = {counts['total']:,} ({100 * counts['total'] / counts['base']:.2f}% of base)",
                  f"  trained: lr {bundle['hyperparameters'].get('lr')}, epochs {bundle['hyperparameters'].get('epochs')}, "
                  f"best epoch {bundle['hyperparameters'].get('best_epoch')}, seed {bundle['seed']}, "
                  f"{bundle['wall_time_s']:.1f} s"]
    lines.append(f"  {d['metric']} history (after task k → value):")
    for e in d["evaluations"]:
        if e["metric"] == d["metric"]:
            value = "skipped" if e["kind"] == "skipped" else f"{e['value']:.4f}"
            lines.append(f"    after {e['after_tasks']}: {value}  [{e['kind']}, {e['split']}]")
    proof = d.get("proof")
    if proof:
        before, after = proof["before"], proof["after"]
        lines.append(f"  proof: base sha256 {before['base_sha256'][:16]}… before == after: "
                     f"{before['base_sha256'] == after['base_sha256']}")
        for other, sha in before["bundle_files"].items():
            lines.append(f"         {other} bundle {sha[:16]}… before == after: {sha == after['bundle_files'].get(other)}")
    return "\n".join(lines)
