"""`cadapt` as `accelerate launch -m tests.support.distributed_cli ARGS` runs it (launched by
tests/training/test_distributed.py), with two test-only changes:

* the task head's dropout is off (0.1 is not a command-line option; the test's encoder has none
  either): dropout draws its masks per process, so with it two processes cannot reproduce one
  process at all, whatever the reduction order;
* every call of a registry method that writes is appended to the file named by
  $CADAPT_WRITE_LOG with this process's rank, so the test can check that only rank 0 wrote, and so
  is the number of processes each training run was shared by (proof that it was shared at all).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

from continual_adapters.cli.main import main
from continual_adapters.registry import Registry
from continual_adapters.stream.job import TaskJob
from continual_adapters.training.distributed import Exchange

#: Registry methods that write rows or files (reads are free to happen on every rank).
WRITERS = (
    "init",
    "set_base_model",
    "begin_task",
    "write_file",
    "write_artifact",
    "finish_task",
    "abort_task",
    "add_evaluations",
    "add_artifact",
    "sign_tasks",
    "remove_task",
)


def without_head_dropout(spec):
    """`TaskJob.spec` with the head's dropout set to 0."""

    @functools.wraps(spec)
    def without_dropout(self, size):
        return dataclasses.replace(spec(self, size), head_dropout=0.0)

    return without_dropout


def log_writes(path: str) -> None:
    rank = int(os.environ.get("RANK", 0))

    def record(entry: dict) -> None:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"rank": rank, **entry}) + "\n")

    for name in WRITERS:
        method = getattr(Registry, name)

        def logged(self, *args, _method=method, _name=name, **kwargs):
            record({"call": _name})
            return _method(self, *args, **kwargs)

        setattr(Registry, name, logged)
    start = Exchange.__init__

    def started(self, *args, **kwargs):
        start(self, *args, **kwargs)
        record({"training_processes": self.processes})

    Exchange.__init__ = started


if __name__ == "__main__":
    TaskJob.spec = without_head_dropout(TaskJob.spec)
    if os.environ.get("CADAPT_WRITE_LOG"):
        log_writes(os.environ["CADAPT_WRITE_LOG"])
    main()
