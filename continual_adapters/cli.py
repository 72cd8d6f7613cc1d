"""`cadapt`: a thin command line over the Python API.

Library code raises `CadaptError`s; this is the only place that turns them into
`Error: …` on stderr and a non-zero exit code.
"""
from __future__ import annotations

import json
import sys

import click

from .config import METHODS, AdapterConfig
from .errors import CadaptError
from .registry import Registry
from .taskdata import DataSpec, with_overrides
from .training import TrainConfig


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CadaptError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


def _emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _registry(ctx) -> Registry:
    return Registry(ctx.obj["url"], ctx.obj["artifacts"])


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--registry", "url", envvar="CADAPT_REGISTRY", default=None, metavar="URL",
              help="SQLAlchemy URL or SQLite path [env CADAPT_REGISTRY; default ./registry.db].")
@click.option("--artifacts", envvar="CADAPT_ARTIFACTS", default=None, metavar="DIR",
              help="Bundle folder for non-SQLite registries [env CADAPT_ARTIFACTS].")
@click.pass_context
def cli(ctx, url, artifacts):
    """Continual learning with Houlsby adapters: one frozen encoder, one small adapter per task."""
    ctx.obj = {"url": url, "artifacts": artifacts}


@cli.command()
@click.pass_context
def init(ctx):
    """Create the registry (idempotent)."""
    registry = _registry(ctx)
    registry.init()
    click.echo(f"registry ready: {registry.url} (bundles in {registry.root})")


@cli.command()
@json_option
@click.option("--all", "show_all", is_flag=True, help="Include retired and pending tasks.")
@click.pass_context
def tasks(ctx, as_json, show_all):
    """List tasks in stream order."""
    registry = _registry(ctx)
    rows = []
    for task in registry.tasks(include_retired=show_all, include_pending=show_all):
        row = {"position": task.position, "name": task.name, "status": task.status, "method": task.method,
               "labels": len(task.labels), "metric": task.primary_metric, "value": None, "params": None}
        if task.status == "ready":
            bundle = registry.bundle(task.name)
            row["params"] = bundle.param_counts.get("total")
            row["bytes"] = bundle.size_bytes
            scores = [e for e in registry.evaluations(task.name, kind="registration") if e.metric == task.primary_metric]
            row["value"] = scores[0].value if scores else None
        rows.append(row)
    lines = [f"{'#':>3}  {'task':<24} {'status':<8} {'method':<9} {'metric':<9} {'value':>7} {'params':>10}"]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        lines.append(f"{r['position'] or '-':>3}  {r['name']:<24} {r['status']:<8} {r['method']:<9} "
                     f"{r['metric']:<9} {value:>7} {r['params'] or '':>10}")
    _emit(rows, as_json, "\n".join(lines) if rows else "no tasks yet: add one with `cadapt add-task`")


@cli.command()
@click.argument("task")
@json_option
@click.pass_context
def show(ctx, task, as_json):
    """A task's bundle, parameters, metrics history and the unchanged-hash proof."""
    from .reporting import task_details, format_task_details

    details = task_details(_registry(ctx), task)
    _emit(details, as_json, format_task_details(details))


@cli.command()
@click.argument("task")
@click.pass_context
def remove(ctx, task):
    """Retire a task: its row is kept as retired, its bundle file is deleted."""
    record = _registry(ctx).remove_task(task)
    click.echo(f"retired {record.name}")


@cli.command()
@click.option("--repair", is_flag=True, help="Delete orphan files and pending rows of dead runs.")
@json_option
@click.pass_context
def fsck(ctx, repair, as_json):
    """Check bundle files against the database; list (and with --repair remove) leftovers."""
    report = _registry(ctx).fsck(repair=repair)
    data = {"ok": report.ok, "orphan_files": report.orphan_files, "dead_pending": report.dead_pending,
            "missing_files": report.missing_files, "checksum_mismatches": report.checksum_mismatches,
            "signature_mismatches": report.signature_mismatches,
            "repaired": report.repaired}
    text = "\n".join([f"{k}: {', '.join(v) if v else 'none'}" for k, v in data.items() if isinstance(v, list)]
                     + ["ok" if report.ok else "problems found" + ("" if repair else " (run with --repair)")])
    _emit(data, as_json, text)
    if not report.ok:
        sys.exit(1)


def _data_spec(data, train, validation, test, dataset, subset, data_dir, **overrides) -> DataSpec:
    if data:
        return DataSpec.from_folder(data, data_dir, **overrides)
    return with_overrides(DataSpec(train=train, dataset=dataset),
                          validation=validation, test=test, subset=subset, **overrides)


@cli.command("add-task")
@click.argument("name")
@click.option("--data", type=click.Path(), help="Dataset folder with {train,validation,test}.jsonl and dataset.json.")
@click.option("--data-dir", envvar="CADAPT_DATA_DIR", type=click.Path(),
              help="Where --data names are looked up [env CADAPT_DATA_DIR; default ../shared/data].")
@click.option("--train", type=click.Path(), help="Training file (JSONL, JSON, CSV, TSV, parquet).")
@click.option("--validation", type=click.Path(), help="Validation file; carved from train (10%, seed) if absent.")
@click.option("--test", type=click.Path(), help="Test file; the task's evaluation split if given.")
@click.option("--dataset", help="Hugging Face hub dataset id (online use), e.g. glue.")
@click.option("--subset", help="Hub dataset configuration, e.g. sst2.")
@click.option("--text-column", default=None, help="Text column [text].")
@click.option("--text-pair-column", default=None, help="Second text column for sentence pairs.")
@click.option("--label-column", default=None, help="Label column [label].")
@click.option("--labels", default=None, help="Comma-separated label order (class ids follow it).")
@click.option("--head", type=click.Choice(["classification", "regression"]), default=None)
@click.option("--metric", default=None, help="Primary metric: accuracy, macro_f1, mcc; pearson, spearman, mse.")
@click.option("--max-train", type=int, default=None, help="Keep a seeded random subset of the training split.")
@click.option("--max-eval", type=int, default=None, help="Cap validation and test splits likewise.")
@click.option("--adapter-size", default=None,
              help="Bottleneck m, or 'auto' to pick from 8, 64, 256 on validation [64; 0 unless --method adapters].")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="adapters (the product), ln-only, or a baseline: naive, top-k, full [the registry's].")
@click.option("--top-k", type=int, default=2, show_default=True, help="Layers fine-tuned per task by --method top-k.")
@click.option("--activation", default="gelu", show_default=True)
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--max-length", type=int, default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cuda, mps or cpu [auto].")
@click.option("--encoder", default=None, help="Base encoder for a new registry [all-MiniLM-L6-v2].")
@click.option("--skip-reeval", is_flag=True, help="Do not re-evaluate earlier tasks (recorded as skipped).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
@click.pass_context
def add_task(ctx, name, data, data_dir, train, validation, test, dataset, subset, text_column,
             text_pair_column, label_column, labels, head, metric, max_train, max_eval, adapter_size,
             method, top_k, activation, epochs, batch_size, lr, max_length, seed, device, encoder, skip_reeval,
             quiet, as_json):
    """Train a new task's adapter, prove earlier tasks untouched, and register it."""
    from .runner import Runner

    overrides = dict(text_column=text_column, pair_column=text_pair_column, label_column=label_column,
                     labels=tuple(v.strip() for v in labels.split(",")) if labels else None,
                     head=head, metric=metric, max_train=max_train, max_eval=max_eval)
    spec = _data_spec(data, train, validation, test, dataset, subset, data_dir, **overrides)
    auto = adapter_size == "auto"
    if adapter_size is not None and not auto and not adapter_size.isdigit():
        raise click.BadParameter("an integer or 'auto'", param_hint="--adapter-size")
    runner = Runner(_registry(ctx), encoder=encoder, device=device, progress=not (quiet or as_json),
                    method=method, top_k=top_k)
    default_size = 64 if (method or runner.method) == "adapters" else 0
    size = default_size if adapter_size is None or auto else int(adapter_size)
    adapter = AdapterConfig(bottleneck=size, activation=activation)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length, seed=seed)
    _quiet_libraries(quiet or as_json)
    result = runner.add_task(name, spec, adapter, config, auto_size=auto, skip_reeval=skip_reeval, method=method)
    if result is None:
        return
    counts = result.param_counts
    lines = [f"task {name} ready at position {result.task.position}",
             f"  {result.eval_split}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.scores.items()),
             f"  parameters added: {counts['total']:,} ({100 * counts['total'] / counts['base']:.2f}% of the base)",
             f"  bundle sha256: {result.bundle_sha256}"]
    lines += [f"  re-evaluated {k}: {v:.4f}" for k, v in result.reevaluated.items()]
    if result.proof.get("unchanged"):
        lines.append("  base and earlier bundles unchanged: yes (hashes before == after)")
    else:
        lines.append(f"  earlier tasks' weights CHANGED (method {result.task.method} shares the encoder)")
    _emit(result.to_dict(), as_json, "\n".join(lines))


def _quiet_libraries(quiet: bool) -> None:
    import transformers

    if quiet:
        transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


@cli.command("audit")
@click.option("--tolerance", type=float, default=0.0, show_default=True,
              help="Allowed score difference (across devices or library versions); 0 demands an exact match.")
@click.option("--device", default=None)
@json_option
@click.pass_context
def audit_command(ctx, tolerance, device, as_json):
    """Re-verify every task: hashes, re-evaluation, golden logits. Exit 0 only if nothing regressed."""
    from .audit import audit
    from .runner import Runner

    _quiet_libraries(True)
    report = audit(Runner(_registry(ctx), device=device, progress=False), tolerance)
    lines = []
    for t in report.tasks:
        detail = f"{t.measured:.4f} (recorded {t.recorded:.4f})" if t.measured is not None else ""
        lines.append(f"{'PASS' if t.ok else 'FAIL'}  {t.task:<24} {detail}")
        lines += [f"      {p}" for p in t.problems]
    mode = "exact" if tolerance == 0 else f"tolerance {tolerance}"
    lines.append(f"audit {'passed' if report.ok else 'FAILED'} ({len(report.tasks)} tasks, {mode})")
    _emit(report.to_dict(), as_json, "\n".join(lines))
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.option("--output", "-o", type=click.Path(), default=None, help="Write the Markdown report to this file.")
@click.option("--plots", type=click.Path(), default=None, help="Folder for PNG figures (R heatmap, growth curve).")
@click.option("--task-id", is_flag=True, help="Also measure task identification for --task auto (runs the model).")
@json_option
@click.pass_context
def report(ctx, output, plots, task_id, as_json):
    """The stream's report: tasks, accuracy matrix, ACC/BWT/forgetting, parameter-growth ledger."""
    from pathlib import Path

    from .reporting import format_markdown, stream_report, write_plots

    data = stream_report(_registry(ctx))
    if task_id:
        from .runner import Runner
        from .taskid import evaluate_identification

        _quiet_libraries(True)
        data["task_identification"] = evaluate_identification(Runner(_registry(ctx), progress=False))
    if plots:
        data["plots"] = [str(p) for p in write_plots(data, plots)]
    text = format_markdown(data)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    _emit(data, as_json, text)


@cli.command("export")
@click.argument("task")
@click.option("--output", "-o", type=click.Path(), default=None,
              help="Archive file (cadapt) or folder (adapterhub) [TASK.cadapt.tar / TASK-adapterhub].")
@click.option("--format", "fmt", type=click.Choice(["cadapt", "adapterhub"]), default="cadapt", show_default=True,
              help="cadapt: self-contained archive for `cadapt import`; adapterhub: folder for adapters' load_adapter.")
@json_option
@click.pass_context
def export_command(ctx, task, output, fmt, as_json):
    """Write a task (bundle, config, metrics, provenance) for another registry or for AdapterHub."""
    if fmt == "adapterhub":
        from .adapterhub import export_adapterhub

        result = export_adapterhub(_registry(ctx), task, output or f"{task}-adapterhub")
        notes = [f"  note: {n}" for n in result.notes]
        text = "\n".join([f"exported {task} to {result.path} (AdapterHub layout)"] + notes)
    else:
        from .archive import export_task

        result = export_task(_registry(ctx), task, output or f"{task}.cadapt.tar")
        text = f"exported {task} to {result.path} ({result.size_bytes:,} bytes, sha256 {result.sha256})"
    _emit(result.to_dict(), as_json, text)


@cli.command("import")
@click.argument("archive", type=click.Path())
@click.option("--name", default=None, help="Register under this name instead of the archived one.")
@click.option("--allow-base-mismatch", is_flag=True,
              help="Accept an archive trained on other base weights (warns; scores will not reproduce).")
@json_option
@click.pass_context
def import_command(ctx, archive, name, allow_base_mismatch, as_json):
    """Check an archive from `cadapt export` in full and register its task in this registry."""
    from .archive import import_task

    result = import_task(_registry(ctx), archive, allow_base_mismatch=allow_base_mismatch, name=name)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    _emit(result.to_dict(), as_json, f"imported {result.source_task} as {result.task} at position {result.position} "
                                     f"(base {result.base}, bundle sha256 {result.bundle_sha256})")


@cli.command("run-scenario")
@click.argument("scenario_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(), default=None, help="Run folder, one registry per method [runs/<name>].")
@click.option("--data-dir", envvar="CADAPT_DATA_DIR", type=click.Path(),
              help="Where the scenario's datasets live [env CADAPT_DATA_DIR; default ../shared/data].")
@click.option("--methods", default=None, help="Comma-separated subset of the scenario's methods.")
@click.option("--registry", "single_registry", default=None,
              help="Put a single-method scenario into this registry (path or URL) instead of --out.")
@click.option("--results", type=click.Path(), default=None, help="Also write the comparison as Markdown here.")
@click.option("--device", default=None)
@click.option("--no-audit", is_flag=True, help="Skip the audit after each method.")
@click.option("--report-only", is_flag=True, help="Train nothing: audit and compare the tasks already there.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
def run_scenario_command(scenario_file, out, data_dir, methods, single_registry, results, device, no_audit,
                         report_only, quiet, as_json):
    """Run a task-stream scenario (every method, every seed) and print the comparison."""
    from pathlib import Path

    from .comparison import compare, format_comparison, write_comparison_plots
    from .scenario import load_scenario, run_scenario

    scenario = load_scenario(scenario_file, data_dir)
    out = Path(out or Path("runs") / scenario.name)
    chosen = [m.strip() for m in methods.split(",")] if methods else None
    _quiet_libraries(quiet or as_json)
    log = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    audits = run_scenario(scenario, out, chosen, device=device, progress=not (quiet or as_json),
                          registry=single_registry, audit_runs=not no_audit, train=not report_only, log=log)
    if single_registry:
        from .reporting import format_markdown, stream_report

        data = stream_report(Registry(single_registry))
        data["audit_ok"] = next(iter(audits.values()), None)
        _emit(data, as_json, format_markdown(data))
        return
    data = compare(scenario, out, audits)
    target = Path(results) if results else out / "results.md"
    figures = target.parent / "figures" / scenario.name if results else out / "figures"
    data["plots"] = write_comparison_plots(data, figures, target)
    # The command that reproduces the document from nothing; on finished runs it only reports,
    # so --report-only is left out of it.
    command = f"cadapt run-scenario {scenario_file}" + (f" --methods {methods}" if methods else "") \
        + f" --out {out}" + (f" --results {results}" if results else "") + (" --no-audit" if no_audit else "")
    text = format_comparison(data, command)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    _emit({k: v for k, v in data.items()}, as_json, text + f"\n(written to {target})")


@cli.command()
@click.argument("texts", nargs=-1)
@click.option("--task", default=None, help="Task name, or 'auto' to predict each input's task.")
@click.option("--file", "input_file", type=click.Path(), default=None,
              help="JSONL/CSV/TSV (columns) or TXT (one text per line); '-' or nothing: stdin.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--text-pair-column", default=None)
@click.option("--task-column", default=None, help="Column naming each row's task: one mixed batch.")
@click.option("--top-k", type=int, default=1, show_default=True, help="Labels to show per input.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default=None)
@json_option
@click.pass_context
def predict(ctx, texts, task, input_file, text_column, text_pair_column, task_column, top_k, batch_size,
            device, as_json):
    """Label inputs with registered tasks (one, one per row, or auto-identified)."""
    from .runner import Runner
    from .serving import predict_inputs, read_inputs

    _quiet_libraries(True)
    inputs = read_inputs(texts, input_file, text_column, text_pair_column, task_column)
    runner = Runner(_registry(ctx), device=device, progress=False)
    for text, p in zip(inputs.texts, predict_inputs(runner, inputs, task, batch_size)):
        top = p.top(top_k) if p.probabilities else [(p.label, p.score)]
        if as_json:
            click.echo(json.dumps({"text": text, "task": p.task, "label": p.label, "score": p.score,
                                   "top": [{"label": k, "score": v} for k, v in top]}))
        else:
            shown = "  ".join(f"{k} {v:.3f}" for k, v in top)
            click.echo(f"{p.task}\t{shown}\t{text[:80]}")


def main() -> None:
    cli(prog_name="cadapt")
