"""The `cadapt` group: global options, and the one place that turns a `CadaptError` into `Error: …`.

Commands live in one module per family (tasks, versions, stream, transfer, predict) and stay thin over the
Python API; what they share (JSON output, opening the registry, quieting libraries) is here.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from continual_adapters.core.errors import CadaptError
from continual_adapters.registry import Registry


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CadaptError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def open_registry(ctx: click.Context, upgrade: bool = True) -> Registry:
    """The registry the global options name. A SQLite registry of an older schema is upgraded on
    the spot, after a backup copy (`Registry.upgrade_if_older`), and the command says so on
    stderr; `upgrade=False` is for `cadapt upgrade` itself, which reports what it did."""
    registry = Registry(ctx.obj["url"], ctx.obj["artifacts"])
    report = registry.upgrade_if_older() if upgrade else None
    if report is not None:
        click.echo(
            f"Note: upgraded registry {registry.url} from schema {report.from_version} to {report.to_version} "
            f"(backup: {report.backup})",
            err=True,
        )
    return registry


def interactive() -> bool:
    """Whether a person can answer a question: only then do destructive commands ask one."""
    return sys.stdin.isatty()


def confirm_or_abort(question: str, yes: bool) -> None:
    """Asks `question` on a terminal unless `yes` (--yes); a "no" aborts the command with exit 1.
    Scripts and pipes are not asked: they said what to do by running the command."""
    if not yes and interactive():
        click.confirm(question, abort=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--registry",
    "url",
    envvar="CADAPT_REGISTRY",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL or SQLite path [env CADAPT_REGISTRY; default ./registry.db].",
)
@click.option(
    "--artifacts",
    envvar="CADAPT_ARTIFACTS",
    default=None,
    metavar="DIR|URL",
    help="Bundle folder, or bucket URL (s3://bucket/prefix, gs://, az://), for non-SQLite registries "
    "[env CADAPT_ARTIFACTS].",
)
@click.pass_context
def cli(ctx, url, artifacts):
    """Continual learning with Houlsby adapters: one frozen encoder, one small adapter per task."""
    ctx.obj = {"url": url, "artifacts": artifacts}


def quiet_libraries(quiet: bool) -> None:
    import transformers

    if quiet:
        transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main() -> None:
    cli(prog_name="cadapt")
