"""Commands over the registry's records: init, tasks, show, remove, fsck (versions.py: a task's
versions, promotion, aliases, restore, gc, upgrade)."""

from __future__ import annotations

import sys
from typing import Any

import click

from continual_adapters.cli.main import cli, confirm_or_abort, emit, json_option, open_registry
from continual_adapters.core.versions import split_key


@cli.command()
@click.pass_context
def init(ctx):
    """Create the registry (idempotent)."""
    registry = open_registry(ctx)
    registry.init()
    click.echo(f"registry ready: {registry.url} (bundles in {registry.store.url})")


@cli.command()
@json_option
@click.option("--all", "show_all", is_flag=True, help="Include retired and pending tasks.")
@click.pass_context
def tasks(ctx, as_json, show_all):
    """List tasks in stream order."""
    registry = open_registry(ctx)
    rows = []
    current = {t.name for t in registry.current_tasks()}
    # One table query instead of a bundle and an evaluations read per task: a long stream lists fast.
    for task in registry.task_table(include_retired=show_all, include_pending=show_all):
        ready = task.status == "ready"
        row: dict[str, Any] = {
            "position": task.position,
            "name": task.name,
            "version": split_key(task.name)[1],
            # A bare name serves this version: one per task, the others stored beside it.
            "current": task.name in current,
            "status": task.status,
            "method": task.method,
            "labels": task.num_labels,
            "metric": task.primary_metric,
            # Only a ready task shows a score: a retired one keeps its history but no longer serves.
            "value": task.score if ready else None,
            "params": task.total_params if ready else None,
        }
        if ready:
            row["bytes"] = task.bundle_bytes
        rows.append(row)
    lines = [f"{'#':>3}  {'task':<24} {'status':<8} {'method':<9} {'metric':<9} {'value':>7} {'params':>10}"]
    several = {split_key(r["name"])[0] for r in rows if r["version"] > 1}  # tasks whose current needs saying
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        shown = r["name"] + (" *" if r["current"] and split_key(r["name"])[0] in several else "")
        lines.append(
            f"{r['position'] or '-':>3}  {shown:<24} {r['status']:<8} {r['method']:<9} "
            f"{r['metric']:<9} {value:>7} {r['params'] or '':>10}"
        )
    if any(r["version"] > 1 for r in rows):
        lines.append("(* current version of a task with several; `cadapt versions` lists them all)")
    emit(rows, as_json, "\n".join(lines) if rows else "no tasks yet: add one with `cadapt add-task`")


@cli.command()
@click.argument("task")
@json_option
@click.pass_context
def show(ctx, task, as_json):
    """A task version's bundle, parameters, metrics history and the unchanged-hash proof (TASK is a
    name, its current version, or name@VERSION or name@ALIAS)."""
    from continual_adapters.report.reporting import format_task_details, task_details

    details = task_details(open_registry(ctx), task)
    emit(details, as_json, format_task_details(details))


@cli.command()
@click.argument("task")
@click.option("--purge", is_flag=True, help="Delete its bundle and probe for good (exact unlearning).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@json_option
@click.pass_context
def remove(ctx, task, purge, yes, as_json):
    """Retire a task version (TASK: its current one, or name@VERSION): no longer served, its files
    kept until `cadapt gc` and restorable with `cadapt restore`; --purge deletes them now."""
    registry = open_registry(ctx)
    target = registry.resolve(task)
    question = "Delete the bundle and probe of {} for good?" if purge else "Retire {} (restorable until gc)?"
    confirm_or_abort(question.format(target.ref), yes)
    record = registry.remove_task(target.ref, purge=purge)
    emit(
        {"task": record.family, "key": record.name, "version": record.version, "status": record.status}
        | {"purged": purge},
        as_json,
        f"{'purged' if purge else 'retired'} {record.ref}"
        + ("" if purge else f"; `cadapt restore {record.ref}` brings it back"),
    )


@cli.command()
@click.option("--repair", is_flag=True, help="Delete orphan files and pending rows of dead runs.")
@json_option
@click.pass_context
def fsck(ctx, repair, as_json):
    """Check bundle and artifact files against the database; list (and with --repair remove) leftovers."""
    report = open_registry(ctx).fsck(repair=repair)
    data = {
        "ok": report.ok,
        "orphan_files": report.orphan_files,
        "dead_pending": report.dead_pending,
        "missing_files": report.missing_files,
        "checksum_mismatches": report.checksum_mismatches,
        "signature_mismatches": report.signature_mismatches,
        "retired_files": report.retired_files,
        "repaired": report.repaired,
    }
    text = "\n".join(
        [f"{k}: {', '.join(v) if v else 'none'}" for k, v in data.items() if isinstance(v, list)]
        + ["ok" if report.ok else "problems found" + ("" if repair else " (run with --repair)")]
    )
    emit(data, as_json, text)
    if not report.ok:
        sys.exit(1)
