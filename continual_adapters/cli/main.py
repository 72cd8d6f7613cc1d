"""The `cadapt` group: global options, and the one place that turns a `CadaptError` into `Error: …`.

Commands live in one module per family (tasks, stream, transfer, predict) and stay thin over the
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


def open_registry(ctx: click.Context) -> Registry:
    return Registry(ctx.obj["url"], ctx.obj["artifacts"])


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
    metavar="DIR",
    help="Bundle folder for non-SQLite registries [env CADAPT_ARTIFACTS].",
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
