"""One unit of a scenario: one method's stream for one seed, into a registry of its own.

A scenario is a grid of units that share nothing but their read-only inputs (the datasets and the
encoder): each method and seed trains into its own run folder and registry, so the units can run
in any order, in one process or spread over machines (stream/executors.py). Every executor runs a
unit through `run_unit`, so a unit ends in the same registry wherever it ran.

A unit is plain data and carries everything it needs with absolute paths (the scenario with its
tasks' files already resolved, the run folder, the registry): a worker on another machine shares
neither the driver's working directory nor its command line nor its `CADAPT_DATA_DIR`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from continual_adapters.core.config import MULTITASK, SHARED_METHODS
from continual_adapters.core.errors import ConfigError
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.scenario import Scenario, run_method, write_final_correct
from continual_adapters.stream.settings import MethodSettings

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunUnit:
    """One method and seed of a scenario, with where it writes and how it runs."""

    scenario: Scenario
    settings: MethodSettings
    seed: int
    #: The scenario's run folder (absolute); the unit writes `out/<label>/seed<k>/` only.
    out: str
    #: One named registry (and its artifacts location) instead of the run folder's own.
    registry: str | None = None
    artifacts: str | None = None
    device: str | None = None
    progress: bool = True
    audit: bool = True
    train: bool = True

    @property
    def name(self) -> str:
        return f"{self.settings.label} seed {self.seed}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.settings.label, self.seed)

    def folder(self) -> Path:
        return self.scenario.run_dir(Path(self.out), self.settings, self.seed)


@dataclass(frozen=True)
class UnitResult:
    """What became of a unit. `audit_ok` is None when nothing was audited (no audit asked, the
    multitask upper bound, or nothing there to report on); `error` is set only by executors that
    let the other units go on after one failed."""

    label: str
    seed: int
    added: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    audit_ok: bool | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.label} seed {self.seed}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.label, self.seed)


def absolute_location(location: str | None) -> str | None:
    """A registry or artifacts URL as given; a plain path made absolute, so that a worker started
    in another directory writes where the driver will read."""
    if location is None or "://" in location:
        return location
    return str(Path(location).expanduser().resolve())


def plan_units(
    scenario: Scenario,
    out: str | Path,
    methods: Sequence[str] | None = None,
    *,
    registry: str | None = None,
    artifacts: str | None = None,
    device: str | None = None,
    progress: bool = True,
    audit: bool = True,
    train: bool = True,
) -> list[RunUnit]:
    """Every (method, seed) of the scenario as a unit, in the scenario's order; refuses the
    combinations that cannot run before anything is trained."""
    chosen = [scenario.method(label) for label in methods] if methods else list(scenario.methods)
    if registry and len(chosen) * len(scenario.seeds) != 1:
        raise ConfigError(
            f"one registry was named (--registry or CADAPT_REGISTRY) but this runs "
            f"{len(chosen) * len(scenario.seeds)} method x seed streams, each into a registry of its own "
            "under --out: pick one with --methods, or unset it"
        )
    if registry and any(settings.method == MULTITASK for settings in chosen):
        raise ConfigError(f"{MULTITASK!r} trains one model on every task at once and keeps no registry: use --out")
    # A local encoder folder named relatively is made absolute like every other path the unit holds
    # (a hub id is left as it is: no such folder exists here).
    encoder = scenario.encoder
    if encoder and Path(encoder).expanduser().exists():
        scenario = replace(scenario, encoder=str(Path(encoder).expanduser().resolve()))
    return [
        RunUnit(
            scenario=scenario,
            settings=settings,
            seed=seed,
            out=str(Path(out).expanduser().resolve()),
            registry=absolute_location(registry),
            artifacts=absolute_location(artifacts),
            device=device,
            progress=progress,
            audit=audit,
            train=train,
        )
        for settings in chosen
        for seed in scenario.seeds
    ]


def run_unit(unit: RunUnit, log: Log = print) -> UnitResult:
    """Trains the unit's missing tasks (resuming: ready tasks are skipped) and audits its registry,
    writing the per-example record the comparison's intervals need; the multitask upper bound
    (`mtl`) is trained on every task at once into its folder instead (stream/multitask.py)."""
    from continual_adapters.stream.audit import audit
    from continual_adapters.stream.multitask import run_multitask
    from continual_adapters.stream.runner import Runner

    scenario, settings, seed = unit.scenario, unit.settings, unit.seed
    if settings.method == MULTITASK:
        if unit.train:
            run_multitask(scenario, settings, seed, Path(unit.out), device=unit.device, progress=unit.progress, log=log)
        return UnitResult(settings.label, seed)
    if unit.registry:
        registry = Registry(unit.registry, unit.artifacts)
    else:
        unit.folder().mkdir(parents=True, exist_ok=True)
        registry = Registry(unit.folder() / "registry.db")
    try:
        added: tuple[str, ...] = ()
        skipped: tuple[str, ...] = ()
        if unit.train:
            outcome = run_method(
                scenario, settings, seed, registry, device=unit.device, progress=unit.progress, log=log
            )
            added, skipped = tuple(outcome.added), tuple(outcome.skipped)
        elif not registry.initialized() or not registry.tasks():
            return UnitResult(settings.label, seed)
        if not unit.audit:
            return UnitResult(settings.label, seed, added, skipped)
        report = audit(Runner(registry, device=unit.device, progress=False))
        if not unit.registry:
            write_final_correct(unit.folder(), report)
        log(
            f"[{unit.name}] audit {'passed' if report.ok else 'FAILED'}"
            + (
                " (expected: the method shares one encoder, so earlier tasks change)"
                if not report.ok and settings.method in SHARED_METHODS
                else ""
            )
        )
        return UnitResult(settings.label, seed, added, skipped, report.ok)
    finally:
        registry.close()
