"""`cadapt rebase`: every task of this registry retrained on a new base encoder, into a new registry.

A thin layer over `continual_adapters.stream.rebase.rebase` (the Python API) and the Markdown
comparison of `report/rebase.py`; the runner and torch are imported only when the command runs.
"""

from __future__ import annotations

import click

from continual_adapters.cli.main import cli, emit, json_option, open_registry, quiet_libraries


@cli.command("rebase")
@click.option(
    "--encoder", required=True, help="The new base encoder: a hub id or a local folder (recorded by its absolute path)."
)
@click.option("--to", "target", required=True, metavar="URL", help="The new registry (SQLAlchemy URL or SQLite path).")
@click.option(
    "--to-artifacts",
    default=None,
    metavar="DIR",
    help="Bundle folder of the new registry when it is not SQLite (the global --artifacts is the source's).",
)
@click.option("--tasks", default=None, help="Comma-separated tasks to carry over [every ready task].")
@click.option(
    "--reeval",
    type=click.Choice(["probe", "full", "none"]),
    default=None,
    help="How each addition confirms the tasks before it in the new registry [as the source recorded].",
)
@click.option("--device", default=None, help="cuda, mps or cpu [auto].")
@click.option("--output", "-o", type=click.Path(), default=None, help="Also write the Markdown comparison here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
@click.pass_context
def rebase_command(ctx, encoder, target, to_artifacts, tasks, reeval, device, output, quiet, as_json):
    """Retrain every task (or --tasks) on a new encoder, in stream order, from its recorded data and
    settings, into a new registry; print old against new. Tasks whose data is gone are skipped and
    listed; rerunning continues where a run stopped."""
    from pathlib import Path

    from continual_adapters.registry import Registry
    from continual_adapters.report.rebase import rebase_markdown
    from continual_adapters.stream.rebase import rebase

    names = [name.strip() for name in tasks.split(",") if name.strip()] if tasks else None
    if tasks is not None and not names:
        raise click.BadParameter("name at least one task", param_hint="--tasks")
    quiet_libraries(quiet or as_json)
    result = rebase(
        open_registry(ctx),
        Registry(target, to_artifacts),
        encoder,
        tasks=names,
        device=device,
        progress=not (quiet or as_json),
        reeval=reeval,
    )
    text = rebase_markdown(result)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    for name, reason in result.skipped.items():
        click.echo(f"Warning: {name} skipped: {reason}", err=True)
    emit(result.to_dict(), as_json, text.rstrip("\n"))
