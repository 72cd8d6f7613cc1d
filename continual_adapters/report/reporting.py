"""Turning registry records into what people read: task details now, stream reports later."""

from __future__ import annotations

from typing import Any

from continual_adapters.core.config import METHOD_STATE_KINDS
from continual_adapters.registry import Registry


def task_details(registry: Registry, ref: str) -> dict:
    """Everything recorded about the task version `ref` names (core/versions.py: a bare name is the
    task's current version), with where it stands among the task's versions."""
    task = registry.resolve(ref)
    name = task.name
    version = next(v for v in registry.versions(task.family) if v.key == name)
    details: dict[str, Any] = {
        "name": task.name,
        "task": task.family,
        "version": task.version,
        "current": version.current,
        "aliases": version.aliases,
        "promotions": [
            {"version": p.version, "at": p.promoted_at.isoformat(), "by": p.promoted_by}
            for p in registry.promotions(task.family)
        ],
        "retired_at": None if task.retired_at is None else task.retired_at.isoformat(),
        "restorable": version.restorable,
        "position": task.position,
        "status": task.status,
        "method": task.method,
        "head": task.head,
        "labels": task.labels,
        "metric": task.primary_metric,
        "data": task.data,
        "created_at": task.created_at.isoformat(),
    }
    if task.status == "ready" or version.restorable:
        bundle = registry.bundle(name)
        details["bundle"] = {
            "path": bundle.path,
            "sha256": bundle.sha256,
            "size_bytes": bundle.size_bytes,
            "param_counts": bundle.param_counts,
            "seed": bundle.seed,
            "hyperparameters": bundle.hyperparameters,
            "library_versions": bundle.library_versions,
            "git_commit": bundle.git_commit,
            "wall_time_s": bundle.wall_time_s,
        }
    details["evaluations"] = [
        {
            "after_tasks": e.after_tasks,
            "split": e.split,
            "metric": e.metric,
            "value": e.value,
            "kind": e.kind,
            "predictions_sha256": e.predictions_sha256,
        }
        for e in registry.evaluations(name)
    ]
    if task.proof:
        details["proof"] = {k: v for k, v in task.proof.items() if k != "golden"}
    return details


def format_task_details(d: dict) -> str:
    kept = ", restorable" if d.get("restorable") else ""
    lines = [
        f"task {d['name']} (#{d['position'] or '-'}, {d['status']}{kept}, {d['method']}, {d['head']})",
        f"  version {d['version']} of {d['task']}: {'current' if d['current'] else 'not current'}"
        + (f"; aliases {', '.join(d['aliases'])}" if d["aliases"] else ""),
        f"  labels ({len(d['labels'])}): {', '.join(d['labels'][:12])}{' …' if len(d['labels']) > 12 else ''}",
        f"  evaluated on: {d['data'].get('eval_split')} "
        f"({d['data'].get('sizes', {}).get(d['data'].get('eval_split'), '?')} examples)",
    ]
    bundle = d.get("bundle")
    if bundle:
        counts = bundle["param_counts"]
        lines += [
            f"  bundle: {bundle['path']} ({bundle['size_bytes']:,} bytes)",
            f"  sha256: {bundle['sha256']}",
            f"  parameters: adapter {counts['adapter']:,}, layer norm {counts['layer_norm']:,}, "
            + (f"LoRA {counts['lora']:,}, " if counts.get("lora") else "")
            + f"head {counts['head']:,} = {counts['total']:,} ({100 * counts['total'] / counts['base']:.2f}% of base)",
            f"  trained: lr {bundle['hyperparameters'].get('lr')}, epochs {bundle['hyperparameters'].get('epochs')}, "
            f"best epoch {bundle['hyperparameters'].get('best_epoch')}, seed {bundle['seed']}, "
            f"{bundle['wall_time_s']:.1f} s",
        ]
    lines.append(f"  {d['metric']} history (after task k → value):")
    for e in d["evaluations"]:
        if e["metric"] == d["metric"]:
            value = "skipped" if e["kind"] == "skipped" else f"{e['value']:.4f}"
            lines.append(f"    after {e['after_tasks']}: {value}  [{e['kind']}, {e['split']}]")
    proof = d.get("proof")
    if proof:
        before, after = proof["before"], proof["after"]
        lines.append(
            f"  proof: base sha256 {before['base_sha256'][:16]}… before == after: "
            f"{before['base_sha256'] == after['base_sha256']}"
        )
        for other, sha in before["bundle_files"].items():
            lines.append(
                f"         {other} bundle {sha[:16]}… before == after: {sha == after['bundle_files'].get(other)}"
            )
    return "\n".join(lines)


def stream_report(registry: Registry) -> dict:
    """The stream in one structure: tasks, R, the CL metrics (cl_metrics.py) and the growth ledger.
    A fixed number of queries however many tasks (tests/report/test_report_queries.py): at 200 tasks
    a query per task, or ORM objects for every evaluation row, cost seconds."""
    from continual_adapters.metrics.continual import forgetting_per_task, summarize
    from continual_adapters.metrics.ledger import growth_ledger, ledger_totals

    base = registry.base_model()
    every = registry.tasks(include_retired=True)
    tasks = [t for t in every if t.status == "ready"]
    accuracy = registry.matrix()
    names, matrix = accuracy.tasks, accuracy.values
    # Every version whose files are stored counts in the ledger (a retired one until it is purged):
    # storage is real whether or not a version serves.
    versions = {v.key: v for v in registry.versions()}
    stored = [t for t in every if t.status == "ready" or versions[t.name].restorable]
    bundles = registry.bundles([t.name for t in stored], check_signatures=False) if stored else {}
    rows = []
    for task in stored:
        counts = bundles[task.name].param_counts
        rows.append(
            {
                "name": task.name,
                "method": task.method,
                "adapter": counts.get("adapter", 0),
                "layer_norm": counts.get("layer_norm", 0),
                "head": counts.get("head", 0),
                "total": counts["total"],
                "bytes": counts.get("bytes"),
            }
        )
    ledger = growth_ledger(base.num_parameters, rows) if base and rows else []
    return {
        "base_model": None
        if base is None
        else {"name": base.name, "sha256": base.sha256, "parameters": base.num_parameters},
        "tasks": [
            {
                "position": t.position,
                "name": t.name,
                "metric": t.primary_metric,
                "labels": len(t.labels),
                "eval_split": t.data.get("eval_split"),
                "score": matrix[names.index(t.name)][names.index(t.name)] if t.name in names else None,
                "version": t.version,
                "current": versions[t.name].current,
            }
            for t in tasks
        ],
        "matrix": {
            "tasks": names,
            "R": matrix,
            "confirmed_by": accuracy.confirmed_by,
            "current": [versions[n].current if n in versions else False for n in names],
        },
        "versions": [
            {"task": v.task, "key": v.key, "version": v.version, "status": v.status, "current": v.current}
            | {"stored": v.status == "ready" or v.restorable, "bundle_bytes": v.bundle_bytes}
            for v in versions.values()
        ],
        "metrics": summarize(matrix) if names else {},
        "forgetting_per_task": forgetting_per_task(matrix) if names else [],
        "ledger": [row.__dict__ for row in ledger],
        "ledger_totals": ledger_totals(ledger, base.num_parameters) if base and ledger else {},
        "method_state": method_state(registry, [t.name for t in tasks]),
    }


def method_state(registry: Registry, names: list[str]) -> dict:
    """What the shared-encoder methods keep beside the bundles (EWC's Fisher, replay's memory): bytes
    per kind, and the latest replay memory's examples, a storage and a privacy cost of the method."""
    kinds: dict[str, int] = {}
    latest = None
    for name, artifacts in registry.artifacts_of(names, list(METHOD_STATE_KINDS.values())).items():
        for artifact in artifacts:
            kinds[artifact.kind] = kinds.get(artifact.kind, 0) + artifact.size_bytes
            latest = name if artifact.kind == METHOD_STATE_KINDS["replay"] else latest
    replay = None
    if latest is not None:  # only a replay stream pays for importing the model libraries here
        from continual_adapters.stream.methods import replay_summary

        data = registry.read_artifact(latest, METHOD_STATE_KINDS["replay"])
        replay = {"after": latest, **replay_summary(data, latest)}
    return {"bytes": sum(kinds.values()), "kinds": kinds, "replay": replay}


def _current(report: dict, key: str) -> str:
    """The mark a version gets in the report's tables once any task has several: ᶜ for the current
    one, "(retired)" for one kept on disk that no longer serves."""
    versions = {v["key"]: v for v in report.get("versions", [])}
    if key not in versions or not any(v["version"] > 1 for v in versions.values()):
        return ""
    if versions[key]["status"] == "retired":
        return " (retired)"
    return "ᶜ" if versions[key]["current"] else ""


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_markdown(report: dict) -> str:
    names, R = report["matrix"]["tasks"], report["matrix"]["R"]
    out = ["# cadapt stream report", ""]
    if report["base_model"]:
        base = report["base_model"]
        out += [
            f"Base model: `{base['name']}` ({base['parameters']:,} parameters, sha256 `{base['sha256'][:16]}…`)",
            "",
        ]
    out += ["## Tasks", "", "| # | task | metric | eval split | score at registration |", "|---|---|---|---|---|"]
    out += [
        f"| {t['position']} | {t['name']}{_current(report, t['name'])} | {t['metric']} | {t['eval_split']} "
        f"| {_fmt(t['score'])} |"
        for t in report["tasks"]
    ]
    out += [
        "",
        "## Accuracy matrix R[i][j]",
        "",
        "Row i: after training task i; column j: task j's primary score.",
        "",
        "| after \\ task | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    how = report["matrix"].get("confirmed_by") or [[None] * len(names) for _ in names]
    out += [
        f"| {name} | "
        + " | ".join(_fmt(v) + ("ᵖ" if h == "probe" else "") for v, h in zip(row, marks, strict=True))
        + " |"
        for name, row, marks in zip(names, R, how, strict=True)
    ]
    if any(h == "probe" for marks in how for h in marks):
        out += [
            "",
            "ᵖ the task's outputs were proved bit-identical by replaying its probe; its last full score "
            "is carried forward. Unmarked entries were scored on the task's evaluation data.",
        ]
    m = report["metrics"]
    out += [
        "",
        "## Continual-learning metrics",
        "",
        "| metric | value | definition |",
        "|---|---|---|",
        f"| ACC | {_fmt(m.get('acc'))} | mean of the last row of R (Lopez-Paz & Ranzato 2017) |",
        f"| BWT | {_fmt(m.get('bwt'))} | mean of R[T-1][j] − R[j][j] over j < T-1; negative means forgetting (GEM) |",
        f"| forgetting | {_fmt(m.get('forgetting'))} | mean of max over earlier rows − last row "
        "(Chaudhry et al. 2018) |",
        f"| FWT | {_fmt(m.get('fwt'))} | needs R[i-1][i] and a random-init baseline; undefined for per-task heads |",
        "",
    ]
    out += [
        "## Parameter growth",
        "",
        "| task | method | added params | added bytes | % of base | total (× base) | one model per task (× base) |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {r['task']}{_current(report, r['task'])} | {r['method']} | {r['added']:,} | {r['added_bytes'] or 0:,} | "
        f"{r['percent_of_base']:.2f}% | {r['cumulative_multiple']:.3f}× | {r['full_finetune_multiple']:.2f}× |"
        for r in report["ledger"]
    ]
    if any(v["version"] > 1 for v in report.get("versions", [])):
        out += [
            "",
            "Every stored version is counted (a retired one until `cadapt gc` or `remove --purge`); ᶜ marks the "
            "version a task's bare name serves, and (retired) one that serves no longer.",
        ]
    state = report.get("method_state") or {}
    if state.get("kinds"):
        out += ["", "## Method state kept beside the bundles", ""]
        out += [f"- {kind}: {size:,} bytes over the stream" for kind, size in sorted(state["kinds"].items())]
        if state.get("replay"):
            r = state["replay"]
            out.append(
                f"- replay memory after {r['after']}: {r['examples']:,} training examples kept as text with their "
                f"labels (of {r['seen']:,} seen; {r['bytes']:,} bytes): a storage and privacy cost of replay"
            )
    if report.get("task_identification"):
        out += _task_id_section(report["task_identification"])
    return "\n".join(out) + "\n"


def _task_id_section(ident: dict) -> list[str]:
    out = [
        "",
        "## Task-agnostic inference (`--task auto`)",
        "",
        f"Nearest per-label centroid of the frozen encoder's features (taskid.py). Task identification "
        f"over all evaluation splits: **{_fmt(ident['task_id_accuracy'])}** (chance {_fmt(ident['chance'])}).",
        "",
        "| task | examples | task identified | accuracy, task given | accuracy, task predicted |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {t['task']} | {t['examples']} | {_fmt(t['task_id_accuracy'])} | {_fmt(t.get('accuracy_given_task'))} "
        f"| {_fmt(t.get('accuracy_predicted_task'))} |"
        for t in ident["tasks"]
    ]
    return out


def write_plots(report: dict, folder) -> list:
    from pathlib import Path

    from continual_adapters.metrics.ledger import LedgerRow
    from continual_adapters.report.plots import plot_accuracy_matrix, plot_parameter_growth

    folder = Path(folder)
    names, R = report["matrix"]["tasks"], report["matrix"]["R"]
    if not names:
        return []
    rows = [LedgerRow(**row) for row in report["ledger"]]
    return [
        plot_accuracy_matrix(names, R, folder / "accuracy_matrix.png", metric_label="primary score"),
        plot_parameter_growth(rows, folder / "parameter_growth.png"),
    ]
