"""`cadapt serve`: every ready task of the registry over HTTP, from one process (serve/).

FastAPI and uvicorn are the optional extra `serve` and are imported inside the command only, so
`cadapt --help` and every other command neither pay for them nor need them.
"""

from __future__ import annotations

import ipaddress
import logging

import click

from continual_adapters.cli.main import cli, open_registry, quiet_libraries
from continual_adapters.core.errors import ConfigError


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--tasks", "task_list", default="all", show_default=True, help="Tasks to serve: a,b,c or all.")
@click.option("--max-batch", type=int, default=64, show_default=True, help="Rows per encoder batch, at most.")
@click.option(
    "--max-wait-ms", type=float, default=5.0, show_default=True, help="How long a request waits for others to join."
)
@click.option("--no-batching", is_flag=True, help="Answer each request on its own (the benchmark's baseline).")
@click.option("--max-queue", type=int, default=256, show_default=True, help="Requests that may wait; then 503.")
@click.option("--max-rows", type=int, default=256, show_default=True, help="Rows per request, at most (413).")
@click.option("--max-body-bytes", type=int, default=1 << 20, show_default=True, help="Request body size limit (413).")
@click.option("--timeout-s", type=float, default=30.0, show_default=True, help="Longest wait for an answer (504).")
@click.option(
    "--poll-s", type=float, default=10.0, show_default=True, help="Re-read the registry this often (0: only on reload)."
)
@click.option(
    "--min-task-confidence",
    type=float,
    default=None,
    help='task "auto": below this routing confidence a row is answered with no task [default: off].',
)
@click.option("--token", envvar="CADAPT_SERVE_TOKEN", default=None, help="Bearer token [env CADAPT_SERVE_TOKEN].")
@click.option("--device", default=None, help="cpu, cuda, mps (default: auto-detected).")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice).")
@click.option("--encoder", default=None, help="Base encoder of an empty registry (default: the registry's).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@click.pass_context
def serve(
    ctx,
    host,
    port,
    task_list,
    max_batch,
    max_wait_ms,
    no_batching,
    max_queue,
    max_rows,
    max_body_bytes,
    timeout_s,
    poll_s,
    min_task_confidence,
    token,
    device,
    threads,
    encoder,
    log_level,
):
    """Serve the registry's tasks over HTTP, batching rows of all tasks together (read-only)."""
    try:
        import uvicorn

        from continual_adapters.serve.app import Server, create_app
    except ImportError as exc:
        raise ConfigError(
            f"cadapt serve needs the 'serve' extra: pip install 'continual_adapters[serve]' ({exc})"
        ) from None
    from continual_adapters.serve.config import ServeConfig

    selection = None if task_list.strip() == "all" else tuple(t.strip() for t in task_list.split(",") if t.strip())
    config = ServeConfig(
        tasks=selection,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        batching=not no_batching,
        max_queue=max_queue,
        max_rows=max_rows,
        max_body_bytes=max_body_bytes,
        timeout_s=timeout_s,
        poll_s=poll_s,
        min_task_confidence=min_task_confidence,
        token=token,
    )
    if not _is_loopback(host) and token is None:
        click.echo(f"Warning: serving on {host} without --token: anyone who can reach it can use it.", err=True)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries(True)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    server = Server(open_registry(ctx), config, encoder=encoder, device=device)
    report = server.start()
    state = server.loader.state
    if selection:
        keys = {name: state.references.get(name, name) for name in selection}  # a bare name: its current version
        missing = [name for name, key in keys.items() if key not in state.tasks and key not in state.refused]
        if missing:
            server.stop()
            raise ConfigError(f"not ready in this registry: {', '.join(missing)}")
    for name, reason in report.refused.items():
        click.echo(f"Refused {name}: {reason}", err=True)
    click.echo(
        f"Serving {len(state.tasks)} task(s) on http://{host}:{port} "
        f"(batching {'on' if config.merges else 'off'}, max batch {max_batch}, wait {max_wait_ms:g} ms)",
        err=True,
    )
    uvicorn.run(create_app(server), host=host, port=port, log_level=log_level, access_log=log_level == "debug")
