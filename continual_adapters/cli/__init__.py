"""Layer 11, `cadapt`: the command line, a thin layer over the Python API.

One module per command family: tasks (init, tasks, show, remove, fsck), stream (add-task, audit,
report), scenario (run-scenario), transfer (export, import), predict and serve. `main` is the console script.
"""

from continual_adapters.cli import predict, scenario, serve, stream, tasks, transfer  # noqa: F401  (registers the commands)
from continual_adapters.cli.main import cli, main

__all__ = ["cli", "main"]
