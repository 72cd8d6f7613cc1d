"""Where a scenario's units run: one after another in this process, or as Ray tasks on a cluster.

The choice is a small strategy. An executor takes the planned units (stream/units.py) and returns
one `UnitResult` per unit, in the order given; what a unit does is `run_unit` wherever it runs, so
the registries, and the comparison read back from them, do not depend on the executor.

* `LocalExecutor` (the default) runs the units in turn; the first error stops the run, as a
  sequential run always has.
* `RayExecutor` submits every unit as a Ray task with the resources one run needs (`num_cpus`,
  `num_gpus`), logs each unit as it finishes, and lets every unit end: a unit that fails is
  reported with its error and the others' results are still gathered. The workers write into the
  same run folder the driver reads the comparison from, so on a cluster of several machines `--out`
  (and the datasets, and a local encoder folder) must be on a file system every node sees.

Ray is the optional extra `ray`, imported only when the Ray executor runs.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from continual_adapters.core.errors import CadaptError, ConfigError, MissingExtraError
from continual_adapters.stream.units import Log, RunUnit, UnitResult, run_unit

#: The executors `cadapt run-scenario --executor` offers; the first is the default.
EXECUTORS = ("local", "ray")
#: The optional extra that installs Ray.
RAY_EXTRA = "ray"


class Executor(Protocol):
    def run(self, units: Sequence[RunUnit], log: Log) -> list[UnitResult]: ...


class LocalExecutor:
    """Every unit in this process, one after another (errors propagate)."""

    def run(self, units: Sequence[RunUnit], log: Log) -> list[UnitResult]:
        return [run_unit(unit, log) for unit in units]


def import_ray() -> Any:
    """The `ray` module, or the pip command that installs it."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError(
            f"--executor ray needs Ray, an optional extra: pip install 'continual_adapters[{RAY_EXTRA}]'"
        ) from None
    return ray


def describe(exc: BaseException) -> str:
    """One line for a unit's error: cadapt's own message as it is, anything else with its type."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, CadaptError) else f"{type(exc).__name__}: {first}".rstrip(": ")


def run_isolated(unit: RunUnit) -> UnitResult:
    """What a Ray worker runs: the unit, with any error returned as that unit's result, so that one
    failing unit neither hides nor stops the others. Its log lines and any traceback go to the
    worker's stderr, which Ray keeps in the worker's log and forwards to the driver."""

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the loading bars of parallel runs interleave
        return run_unit(unit, log)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return UnitResult(unit.settings.label, unit.seed, error=describe(exc))


def summary(result: UnitResult) -> str:
    """The line the driver logs when a unit finishes."""
    if result.error is not None:
        return f"FAILED: {result.error}"
    audit = {None: "not audited", True: "audit passed", False: "audit FAILED"}[result.audit_ok]
    return f"added {len(result.added)}, skipped {len(result.skipped)} task(s), {audit}"


@dataclass(frozen=True)
class RayExecutor:
    """Every unit as a Ray task. `address` is `ray.init`'s: None starts a local Ray (or joins the
    one RAY_ADDRESS names), "auto" joins the cluster running here, "host:port" or "ray://host:10001"
    a remote one. A Ray already initialised in this process is used as it is and left running."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    #: Whether the workers' log lines are forwarded to this process (Ray's `log_to_driver`).
    forward_logs: bool = True

    def __post_init__(self) -> None:
        if not self.cpus_per_run > 0:
            raise ConfigError(f"--cpus-per-run must be > 0, got {self.cpus_per_run}")
        if not self.gpus_per_run >= 0:
            raise ConfigError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")

    def run(self, units: Sequence[RunUnit], log: Log) -> list[UnitResult]:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=self.forward_logs,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                hint = (
                    " (with Ray's token authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN)"
                    if self.address
                    else ""
                )
                raise ConfigError(
                    f"cannot start or join Ray at {self.address or 'a local instance'}: {exc}{hint}"
                ) from None
        try:
            return self._gather(ray, units, log)
        finally:
            if started:
                ray.shutdown()  # only what this call started (or joined): never someone else's Ray

    def _gather(self, ray: Any, units: Sequence[RunUnit], log: Log) -> list[UnitResult]:
        self._warn_if_unschedulable(ray, log)
        task = ray.remote(run_isolated)
        # Progress bars of parallel runs interleave into noise in the forwarded logs: lines only.
        pending = {
            task.options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, name=f"cadapt {unit.name}").remote(
                replace(unit, progress=False)
            ): index
            for index, unit in enumerate(units)
        }
        log(
            f"submitted {len(units)} run(s) to Ray ({self.cpus_per_run:g} CPU, {self.gpus_per_run:g} GPU each; "
            f"cluster {self._resources(ray)})"
        )
        results: list[UnitResult | None] = [None] * len(units)
        waiting = list(pending)
        try:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                for ref in done:
                    unit = units[pending[ref]]
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died, or Ray could not run it
                        result = UnitResult(unit.settings.label, unit.seed, error=describe(exc))
                    results[pending[ref]] = result
                    finished = sum(r is not None for r in results)
                    log(f"[{unit.name}] finished on Ray ({finished}/{len(units)}): {summary(result)}")
        except BaseException:
            for ref in waiting:  # interrupted: the runs not yet finished are stopped, not orphaned
                ray.cancel(ref)
            raise
        return [r for r in results if r is not None]

    @staticmethod
    def _resources(ray: Any) -> str:
        total = ray.cluster_resources()
        return f"{total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"

    def _warn_if_unschedulable(self, ray: Any, log: Log) -> None:
        """A unit asking for more than any node has waits for such a node forever (an autoscaling
        cluster may add one): said at once rather than left to look like a hang."""
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        if not any(r.get("CPU", 0) >= self.cpus_per_run and r.get("GPU", 0) >= self.gpus_per_run for r in nodes):
            log(
                f"warning: no Ray node has the {self.cpus_per_run:g} CPU and {self.gpus_per_run:g} GPU one run "
                "asks for; the runs wait until such a node joins (Ctrl-C stops them)"
            )


def make_executor(
    name: str, address: str | None = None, cpus_per_run: float | None = None, gpus_per_run: float | None = None
) -> Executor:
    """The executor `cadapt run-scenario --executor NAME` asks for. The Ray settings are refused
    for the local executor rather than silently ignored."""
    if name == "local":
        given = [
            flag
            for flag, value in (
                ("--address", address),
                ("--cpus-per-run", cpus_per_run),
                ("--gpus-per-run", gpus_per_run),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(f"{', '.join(given)}: Ray settings, for --executor ray only")
        return LocalExecutor()
    if name == "ray":
        import_ray()  # refused before anything is planned when Ray is missing
        return RayExecutor(
            address,
            RayExecutor.cpus_per_run if cpus_per_run is None else cpus_per_run,
            RayExecutor.gpus_per_run if gpus_per_run is None else gpus_per_run,
        )
    raise ConfigError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
