"""Commands that move tasks between registries: export, import."""

from __future__ import annotations

import click

from continual_adapters.cli.main import cli, emit, json_option, open_registry


@cli.command("export")
@click.argument("task")
@click.option(
    "--output",
    "-o",
    type=click.Path(),
    default=None,
    help="Archive file (cadapt) or folder (adapterhub) [TASK.cadapt.tar / TASK-adapterhub].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cadapt", "adapterhub"]),
    default="cadapt",
    show_default=True,
    help="cadapt: self-contained archive for `cadapt import`; adapterhub: folder for adapters' load_adapter.",
)
@json_option
@click.pass_context
def export_command(ctx, task, output, fmt, as_json):
    """Write a task version (TASK: its current one, or name@VERSION / name@ALIAS) with its bundle,
    config, metrics and provenance, for another registry or for AdapterHub."""
    registry = open_registry(ctx)
    task = registry.resolve(task).name
    if fmt == "adapterhub":
        from continual_adapters.transfer.adapterhub import export_adapterhub

        hub = export_adapterhub(registry, task, output or f"{task}-adapterhub")
        notes = [f"  note: {n}" for n in hub.notes]
        emit(hub.to_dict(), as_json, "\n".join([f"exported {task} to {hub.path} (AdapterHub layout)", *notes]))
        return
    from continual_adapters.transfer.archive import export_task

    result = export_task(registry, task, output or f"{task}.cadapt.tar")
    text = f"exported {task} to {result.path} ({result.size_bytes:,} bytes, sha256 {result.sha256})"
    emit(result.to_dict(), as_json, text)


@cli.command("import")
@click.argument("archive", type=click.Path())
@click.option("--name", default=None, help="Register under this name instead of the archived one.")
@click.option(
    "--allow-base-mismatch",
    is_flag=True,
    help="Accept an archive trained on other base weights (warns; scores will not reproduce).",
)
@json_option
@click.pass_context
def import_command(ctx, archive, name, allow_base_mismatch, as_json):
    """Check an archive from `cadapt export` in full and register its task in this registry."""
    from continual_adapters.transfer.archive import import_task

    result = import_task(open_registry(ctx), archive, allow_base_mismatch=allow_base_mismatch, name=name)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    emit(
        result.to_dict(),
        as_json,
        f"imported {result.source_task} as {result.task} at position {result.position} "
        f"(base {result.base}, bundle sha256 {result.bundle_sha256})",
    )
