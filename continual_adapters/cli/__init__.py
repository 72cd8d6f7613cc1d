"""Layer 11, `cadapt`: the command line, a thin layer over the Python API.

One module per command family: tasks (init, tasks, show, remove, fsck), versions (versions, promote,
alias, restore, gc, upgrade), stream (add-task, audit, report), scenario (run-scenario), transfer
(export, import), rebase, predict and serve. `main` is the console script.
"""

from continual_adapters.cli import predict, rebase, scenario, serve, stream, tasks, transfer, versions  # noqa: F401  (registers the commands)
from continual_adapters.cli.main import cli, main

__all__ = ["cli", "main"]
