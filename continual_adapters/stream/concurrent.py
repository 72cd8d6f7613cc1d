"""Tasks added at the same time see each other in the accuracy matrix.

Several processes may add tasks to one registry at once: writes take the registry's lock, training
does not. Each addition confirms the tasks it found ready when it began (confirm.py). A task that
became ready while it trained was registered first, so it stands earlier in the stream, and the
new task's row of the matrix needs an entry for it too; without one, each of two tasks added
together would miss the other's row.

`confirm_late` gives it that entry, after training, by the same check as every earlier task: its
probe replayed (the last full score carried forward), or, under a method that shares the encoder,
a full re-score with the new task's encoder, as serving the stream would use it. It looks again
until no new task appeared. What can still slip through, a task registered between that last look
and this task's commit, `matrix_holes` finds and `fill_holes` fills with the same check; `cadapt
audit` runs both and reports each entry it wrote.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from continual_adapters.core.errors import CadaptError
from continual_adapters.registry import Registry
from continual_adapters.stream.confirm import Confirmed, skipped

if TYPE_CHECKING:
    from continual_adapters.stream.job import Confirmation, TaskJob
    from continual_adapters.stream.runner import Runner

#: Looks for newly ready tasks after training: each costs one registry read, and a stream where
#: tasks keep finishing faster than they are confirmed leaves the rest to the audit.
MAX_LOOKS = 8


def confirm_late(runner: Runner, job: TaskJob, earlier: list[str], confirmation: Confirmation) -> Confirmation:
    """Adds to `confirmation` an entry for every task that became ready after `earlier` was read,
    confirmed by `confirmation.policy` (skipped under `--reeval none`, as the earlier ones were)."""
    seen = {*earlier, job.name}
    for _ in range(MAX_LOOKS):
        late = [task for task in runner.registry.tasks() if task.name not in seen]
        if not late:
            break
        names = [task.name for task in late]
        confirmed = skipped(late) if confirmation.policy == "none" else confirm_with(runner, job.name, names)
        confirmation.drafts.extend(confirmed.drafts)
        confirmation.reevaluated.update(confirmed.rescored)
        confirmation.probes.update(confirmed.probes)
        confirmation.unavailable.update(confirmed.unavailable)
        confirmation.late.extend(names)
        seen.update(names)
    return confirmation


def confirm_with(runner: Runner, current: str, names: list[str]) -> Confirmed:
    """Confirms `names` against the model as `current` leaves it. Isolated tasks replay their probes
    (their outputs depend on nothing else). Under a shared encoder, attaching their bundles loads
    their encoder too, so `current`'s is put back before they are re-scored in full with it."""
    model = runner.model
    if model.isolates_tasks:
        return runner.earlier_tasks().confirm(names, "probe")
    own = {key: value.clone() for key, value in model.task_modules(current).state_dict().items()}
    for name in names:
        runner.attach(name)
    model.task_modules(current).load_state_dict(own)
    return runner.earlier_tasks().confirm(names, "full", keep_attached=True)


@dataclass
class Hole:
    """A ready task with no entry in a later task's row of the accuracy matrix."""

    task: str
    after: str
    after_tasks: int
    filled: bool = False
    confirmed_by: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matrix_holes(registry: Registry) -> list[Hole]:
    """Every (row, task) of the matrix that should hold an entry and holds none: a task still
    ready is confirmed by each addition after its own, so every later row needs it (an entry
    marked skipped counts: the row says it was not checked). A retired task needs none after
    it was retired, and its bundle is gone, so its rows are left alone."""
    names, kinds = registry.confirmations()
    tasks = {task.name: task for task in registry.tasks(include_retired=True)}
    holes = []
    for row, entries in enumerate(kinds):  # row i is the matrix after the task at position i + 1
        for column, entry in enumerate(entries[:row]):
            if entry is None and tasks[names[column]].status == "ready":
                holes.append(Hole(names[column], names[row], row + 1))
    return holes


def fill_holes(runner: Runner, holes: list[Hole], probe_only: bool = False) -> list[Hole]:
    """Writes each hole's entry, by the check an addition would have made (`confirm_with`), and
    returns the holes marked filled or, with the reason, not. Under a shared encoder an entry
    needs the encoder the row's task left, so that task's bundle must still be there (and, with
    `probe_only`, no dataset is read, so nothing is re-scored: such holes are left to a full audit)."""
    if not holes:
        return holes
    registry, model = runner.registry, runner.model
    ready = {task.name: task for task in registry.tasks()}
    if model.isolates_tasks:
        confirmed: dict[str, Confirmed | str] = {}
        for name in dict.fromkeys(hole.task for hole in holes):
            confirmed[name] = attempt(functools.partial(runner.earlier_tasks().confirm, [name], "probe"))
        for hole in holes:
            write(registry, hole, confirmed[hole.task])
        return holes
    latest = list(ready)[-1]
    for hole in holes:
        if probe_only:
            hole.reason = "a shared encoder's entry needs a full re-score: run `cadapt audit` without --probe"
        elif hole.after not in ready:
            hole.reason = f"the encoder {hole.after!r} left is gone with its bundle (retired)"
        else:
            write(registry, hole, attempt(functools.partial(rescore_after, runner, hole, latest)))
    return holes


def rescore_after(runner: Runner, hole: Hole, latest: str) -> Confirmed:
    """`hole.task` re-scored in full on the encoder `hole.after` left; the model is left with the
    latest task's encoder, as the stream serves it."""
    runner.attach(latest)  # every ready task, loaded in stream order
    with_encoder_of(runner, hole.after)
    try:
        return runner.earlier_tasks().confirm([hole.task], "full", keep_attached=True)
    finally:
        with_encoder_of(runner, latest)


def with_encoder_of(runner: Runner, name: str) -> None:
    """Loads `name`'s bundle again, and with it the shared encoder as `name` left it."""
    if name in runner.model.tasks:
        runner.model.remove_task(name)
    runner.attach(name)


def attempt(check: Callable[[], Confirmed]) -> Confirmed | str:
    """The check's rows, or why it could not be made (data gone and no probe, a bundle that fails
    its sha256): a hole that stays, reported, rather than an audit that stops."""
    try:
        return check()
    except CadaptError as exc:
        return str(exc)


def write(registry: Registry, hole: Hole, confirmed: Confirmed | str) -> None:
    if isinstance(confirmed, str):
        hole.reason = confirmed
        return
    drafts = [draft for draft in confirmed.drafts if draft.task == hole.task]
    if not drafts:
        hole.reason = confirmed.unavailable.get(hole.task, "no entry could be measured")
        return
    registry.add_evaluations(drafts, after_tasks=hole.after_tasks)
    hole.filled = True
    hole.confirmed_by = drafts[0].kind if drafts[0].kind != "reeval" else drafts[0].confirmation
