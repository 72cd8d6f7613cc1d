"""`cadapt run-scenario`: every method and seed of a task-stream scenario, then the comparison.

Like the other command modules it imports only click and torch-free modules (configs, the executor
names) at module level; the runner, the comparison and the plots are imported inside the command.
`--executor ray` runs the method x seed runs as Ray tasks (stream/executors.py); the document is the
same whichever executor ran them.
"""

from __future__ import annotations

import re

import click

from continual_adapters.cli.main import cli, emit, json_option, quiet_libraries
from continual_adapters.core.errors import ConfigError, UnitsFailedError
from continual_adapters.registry import Registry
from continual_adapters.stream.executors import EXECUTORS


def _seed_list(ctx, param, value: str | None) -> tuple[int, ...] | None:
    """`--seeds 0,1,2` -> (0, 1, 2); anything else is a usage error (exit 2) quoting the value."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if not all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
        raise click.UsageError(f"--seeds: {value!r} is not a comma-separated list of integers", ctx)
    seeds = tuple(int(p) for p in parts)
    if len(set(seeds)) != len(seeds):
        raise click.UsageError(f"--seeds: {value!r} names a seed twice", ctx)
    return seeds


@cli.command("run-scenario")
@click.argument("scenario_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(), default=None, help="Run folder, one registry per method [runs/<name>].")
@click.option(
    "--data-dir",
    envvar="CADAPT_DATA_DIR",
    type=click.Path(),
    help="Where the scenario's datasets live [env CADAPT_DATA_DIR; default ../shared/data].",
)
@click.option("--methods", default=None, help="Comma-separated subset of the scenario's methods.")
@click.option(
    "--seeds",
    default=None,
    callback=_seed_list,
    help="Comma-separated seeds, e.g. 0,1,2, instead of the scenario's `seeds:` (with --report-only too).",
)
@click.option(
    "--first",
    type=click.IntRange(min=1),
    default=None,
    help="Run only the stream's first N tasks (a prefix; a later run without --first goes on from there).",
)
@click.option(
    "--registry",
    "single_registry",
    default=None,
    help="Put a single-method scenario into this registry (path or URL) instead of --out "
    "[the global --registry / CADAPT_REGISTRY, if set].",
)
@click.option("--results", type=click.Path(), default=None, help="Also write the comparison as Markdown here.")
@click.option("--device", default=None)
@click.option("--no-audit", is_flag=True, help="Skip the audit after each method.")
@click.option("--report-only", is_flag=True, help="Train nothing: audit and compare the tasks already there.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default=EXECUTORS[0],
    show_default=True,
    help="Where the method x seed runs go: one after another here, or as Ray tasks (the `ray` extra).",
)
@click.option(
    "--address",
    default=None,
    help="The Ray cluster to join, as ray.init takes it (host:port, ray://host:10001, auto) "
    "[default: RAY_ADDRESS, else a Ray started here].",
)
@click.option("--cpus-per-run", type=float, default=None, help="CPUs Ray reserves for each run [1].")
@click.option(
    "--gpus-per-run", type=float, default=None, help="GPUs Ray reserves for each run (fractions share one) [0]."
)
@json_option
@click.pass_context
def run_scenario_command(
    ctx,
    scenario_file,
    out,
    data_dir,
    methods,
    seeds,
    first,
    single_registry,
    results,
    device,
    no_audit,
    report_only,
    quiet,
    executor,
    address,
    cpus_per_run,
    gpus_per_run,
    as_json,
):
    """Run a task-stream scenario (every method, every seed) and print the comparison."""
    from dataclasses import replace
    from pathlib import Path

    from continual_adapters.report.comparison import compare
    from continual_adapters.report.comparison_doc import format_comparison, write_comparison_plots
    from continual_adapters.stream.executors import make_executor
    from continual_adapters.stream.scenario import load_scenario, run_scenario

    runs_on = make_executor(executor, address, cpus_per_run, gpus_per_run)
    scenario = load_scenario(scenario_file, data_dir)
    if seeds is not None:
        scenario = replace(scenario, seeds=seeds)
    if first is not None:
        if first > len(scenario.tasks):
            raise click.BadParameter(f"the stream has only {len(scenario.tasks)} task(s)", ctx, param_hint="--first")
        scenario = replace(scenario, tasks=scenario.tasks[:first])
    out = Path(out or Path("runs") / scenario.name)
    chosen = [m.strip() for m in methods.split(",")] if methods else None
    if chosen:  # the comparison shows the chosen methods only, even where others have run folders
        scenario = replace(scenario, methods=tuple(scenario.method(label) for label in chosen))
    quiet_libraries(quiet or as_json)
    log = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    # A registry named globally (--registry, CADAPT_REGISTRY; --artifacts, CADAPT_ARTIFACTS) is one
    # registry: honoured for a single run, refused for a comparison rather than silently ignored.
    single_registry = single_registry or ctx.obj["url"]
    artifacts = ctx.obj["artifacts"]
    if artifacts and not single_registry:
        raise ConfigError(
            "--artifacts / CADAPT_ARTIFACTS names one bundle folder, but run-scenario keeps one "
            "registry per method and seed under --out: name one registry with --registry as well"
        )
    failed: UnitsFailedError | None = None
    try:
        audits = run_scenario(
            scenario,
            out,
            chosen,
            device=device,
            progress=not (quiet or as_json),
            registry=single_registry,
            artifacts=artifacts,
            audit_runs=not no_audit,
            train=not report_only,
            log=log,
            executor=runs_on,
        )
    except UnitsFailedError as exc:  # the runs that finished are still reported, then the failures
        audits, failed = exc.audits, exc
    if single_registry:
        from continual_adapters.report.reporting import format_markdown, stream_report

        if failed:  # the one run there is
            raise failed
        data = stream_report(Registry(single_registry, artifacts))
        data["audit_ok"] = next(iter(audits.values()), None)
        emit(data, as_json, format_markdown(data))
        return
    data = compare(scenario, out, audits)
    target = Path(results) if results else out / "results.md"
    figures = target.parent / "figures" / scenario.name if results else out / "figures"
    data["plots"] = write_comparison_plots(data, figures, target)
    # The command that reproduces the document from nothing; on finished runs it only reports,
    # so --report-only is left out of it.
    command = (
        f"cadapt run-scenario {scenario_file}"
        + (f" --methods {methods}" if methods else "")
        + (f" --seeds {','.join(map(str, seeds))}" if seeds is not None else "")
        + (f" --first {first}" if first is not None else "")
        + f" --out {out}"
        + (f" --results {results}" if results else "")
        + (" --no-audit" if no_audit else "")
    )
    text = format_comparison(data, command)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    emit({k: v for k, v in data.items()}, as_json, text + f"\n(written to {target})")
    if failed:
        raise failed
