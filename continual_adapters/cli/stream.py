"""Commands that grow or read the stream: add-task, audit, report (run-scenario: scenario.py).

Only click and the torch-free configs are imported at module level: `cadapt` imports this module
for every command, so anything that loads torch, transformers, scikit-learn or even numpy (the
runner, the data readers, the plots) is imported inside the command that uses it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from continual_adapters.cli.main import cli, emit, json_option, open_registry, quiet_libraries
from continual_adapters.core.config import (
    DEFAULT_EPOCHS,
    DEFAULT_EWC_DECAY,
    DEFAULT_EWC_LAMBDA,
    DEFAULT_LORA_RANK,
    DEFAULT_LR,
    DEFAULT_LWF_TEMPERATURE,
    DEFAULT_LWF_WEIGHT,
    DEFAULT_REPLAY_SIZE,
    DEFAULT_TOP_LAYERS,
    METHODS,
    AdapterConfig,
    MethodOptions,
    TrainConfig,
    validate_task_name,
)

if TYPE_CHECKING:
    from continual_adapters.data.taskdata import DataSpec


def _data_spec(data, train, validation, test, dataset, subset, data_dir, **overrides) -> DataSpec:
    from continual_adapters.data.taskdata import DataSpec, with_overrides

    if data:
        return DataSpec.from_folder(data, data_dir, **overrides)
    return with_overrides(
        DataSpec(train=train, dataset=dataset), validation=validation, test=test, subset=subset, **overrides
    )


@cli.command("add-task")
@click.argument("name")
@click.option("--data", type=click.Path(), help="Dataset folder with {train,validation,test}.jsonl and dataset.json.")
@click.option(
    "--data-dir",
    envvar="CADAPT_DATA_DIR",
    type=click.Path(),
    help="Where --data names are looked up [env CADAPT_DATA_DIR; default ../shared/data].",
)
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
@click.option(
    "--max-eval", type=int, default=None, help="Cap the test split likewise, and validation unless --max-validation."
)
@click.option(
    "--max-validation",
    type=int,
    default=None,
    help="Cap the validation split only (model selection: best epoch, --adapter-size auto) [--max-eval].",
)
@click.option(
    "--adapter-size",
    default=None,
    help="Bottleneck m, or 'auto' to pick from 8, 64, 256 on validation [64; 0 unless --method adapters].",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=None,
    help="adapters (the product), ln-only, or a baseline: naive, top-k, full [the registry's].",
)
@click.option(
    "--top-layers", type=int, default=None, help=f"Layers fine-tuned per task by --method top-k [{DEFAULT_TOP_LAYERS}]."
)
@click.option(
    "--top-k",
    "top_k_alias",
    type=int,
    default=None,
    hidden=True,
    help="Old name of --top-layers (it clashed with predict's --top-k).",
)
@click.option("--lora-rank", type=int, default=None, help=f"--method lora: rank per task [{DEFAULT_LORA_RANK}].")
@click.option(
    "--ewc-lambda", type=float, default=None, help=f"--method ewc: penalty weight lambda [{DEFAULT_EWC_LAMBDA:g}]."
)
@click.option(
    "--ewc-decay", type=float, default=None, help=f"--method ewc: running Fisher's decay gamma [{DEFAULT_EWC_DECAY:g}]."
)
@click.option(
    "--replay-size",
    type=int,
    default=None,
    help=f"--method replay: examples the reservoir keeps over the whole stream [{DEFAULT_REPLAY_SIZE}].",
)
@click.option(
    "--lwf-temperature",
    type=float,
    default=None,
    help=f"--method lwf: distillation temperature [{DEFAULT_LWF_TEMPERATURE:g}].",
)
@click.option(
    "--lwf-weight", type=float, default=None, help=f"--method lwf: distillation weight [{DEFAULT_LWF_WEIGHT:g}]."
)
@click.option("--activation", default="gelu", show_default=True)
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Learning rate [" + ", ".join(f"{m} {lr:g}" for m, lr in DEFAULT_LR.items()) + "].",
)
@click.option("--max-length", type=int, default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cuda, mps or cpu [auto].")
@click.option("--encoder", default=None, help="Base encoder for a new registry [all-MiniLM-L6-v2].")
@click.option(
    "--reeval",
    type=click.Choice(["probe", "full", "none"]),
    default="probe",
    show_default=True,
    help="How earlier tasks are confirmed: replay their probes (bit-identical outputs, last score carried), "
    "re-score them on their data, or not at all (recorded as skipped).",
)
@click.option("--skip-reeval", is_flag=True, hidden=True, help="Old spelling of --reeval none.")
@click.option(
    "--new-version",
    is_flag=True,
    help="NAME exists: train its next version beside it (NAME@2, ...), current once `cadapt promote`d.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
@click.pass_context
def add_task(
    ctx,
    name,
    data,
    data_dir,
    train,
    validation,
    test,
    dataset,
    subset,
    text_column,
    text_pair_column,
    label_column,
    labels,
    head,
    metric,
    max_train,
    max_eval,
    max_validation,
    adapter_size,
    method,
    top_layers,
    top_k_alias,
    lora_rank,
    ewc_lambda,
    ewc_decay,
    replay_size,
    lwf_temperature,
    lwf_weight,
    activation,
    epochs,
    batch_size,
    lr,
    max_length,
    seed,
    device,
    encoder,
    reeval,
    skip_reeval,
    new_version,
    quiet,
    as_json,
):
    """Train a new task's adapter (or the module of another --method), prove earlier tasks untouched
    (or record how a method that shares the encoder changed them), and register it."""
    from continual_adapters.stream.runner import Runner

    validate_task_name(name)
    overrides = dict(
        text_column=text_column,
        pair_column=text_pair_column,
        label_column=label_column,
        labels=tuple(v.strip() for v in labels.split(",")) if labels else None,
        head=head,
        metric=metric,
        max_train=max_train,
        max_eval=max_eval,
        max_validation=max_validation,
    )
    spec = _data_spec(data, train, validation, test, dataset, subset, data_dir, **overrides)
    auto = adapter_size == "auto"
    if adapter_size is not None and not auto and not adapter_size.isdigit():
        raise click.BadParameter("an integer or 'auto'", param_hint="--adapter-size")
    if top_k_alias is not None:
        click.echo("Warning: --top-k is now --top-layers on add-task", err=True)
        top_layers = top_layers if top_layers is not None else top_k_alias
    runner = Runner(
        open_registry(ctx),
        encoder=encoder,
        device=device,
        progress=not (quiet or as_json),
        method=method,
        top_layers=DEFAULT_TOP_LAYERS if top_layers is None else top_layers,
    )
    chosen = method or runner.method
    options = MethodOptions.given(
        chosen,
        lora_rank=lora_rank,
        ewc_lambda=ewc_lambda,
        ewc_decay=ewc_decay,
        replay_size=replay_size,
        lwf_temperature=lwf_temperature,
        lwf_weight=lwf_weight,
    )
    size = (64 if chosen == "adapters" else 0) if adapter_size is None or auto else int(adapter_size)
    adapter = AdapterConfig(bottleneck=size, activation=activation)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=DEFAULT_LR[chosen] if lr is None else lr,
        max_length=max_length,
        seed=seed,
    )
    quiet_libraries(quiet or as_json)
    result = runner.add_task(
        name,
        spec,
        adapter,
        config,
        auto_size=auto,
        method=method,
        reeval="none" if skip_reeval else reeval,
        options=options,
        new_version=new_version,
    )
    if result is None:
        return
    counts = result.param_counts
    lines = [f"task {result.task.name} ready at position {result.task.position}"]
    if result.task.version > 1:
        promote = f"`cadapt promote {result.task.ref}`"
        lines.append(f"  version {result.task.version} of {name}; a bare {name} serves it once {promote}")
    lines += [
        f"  {result.eval_split}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.scores.items()),
        f"  parameters added: {counts['total']:,} ({100 * counts['total'] / counts['base']:.2f}% of the base)",
        f"  bundle sha256: {result.bundle_sha256}",
    ]
    lines += [f"  re-evaluated {k}: {v:.4f}" for k, v in result.reevaluated.items()]
    probes = result.proof.get("probes") or {}
    if probes:
        lines.append(f"  earlier tasks confirmed by their probes (outputs bit-identical): {len(probes)}")
    lines += [f"  {k}: {v}" for k, v in (result.proof.get("unavailable") or {}).items()]
    if result.proof.get("unchanged"):
        lines.append("  base and earlier bundles unchanged: yes (hashes before == after)")
    else:
        lines.append(f"  earlier tasks' weights CHANGED (method {result.task.method} shares the encoder)")
    emit(result.to_dict(), as_json, "\n".join(lines))


@cli.command("audit")
@click.argument("tasks", nargs=-1)
@click.option(
    "--tolerance",
    type=float,
    default=0.0,
    show_default=True,
    help="Allowed score difference (across devices or library versions); 0 demands an exact match.",
)
@click.option("--device", default=None)
@click.option(
    "--probe",
    "probe_only",
    is_flag=True,
    help="Fast form: hashes, recorded rows and each task's probe replayed; no dataset is read.",
)
@json_option
@click.pass_context
def audit_command(ctx, tasks, tolerance, device, probe_only, as_json):
    """Re-verify every task: hashes, re-evaluation, golden logits. Exit 0 only if nothing regressed.

    The outcome is recorded in the registry as its latest audit (what `cadapt serve`'s dashboard shows).
    TASKS (sst2, sst2@2, sst2@production) audit only the versions they name, and are not recorded."""
    from continual_adapters.stream.audit import audit
    from continual_adapters.stream.runner import Runner

    quiet_libraries(True)
    runner = Runner(open_registry(ctx), device=device, progress=False)
    report = audit(runner, tolerance, probe_only=probe_only, refs=tasks or None)
    lines = []
    for t in report.tasks:
        if t.confirmed_by == "probe":
            detail = "" if t.probe_max_diff is None else f"probe max difference {t.probe_max_diff:.3g}"
        else:
            detail = f"{t.measured:.4f} (recorded {t.recorded:.4f})" if t.measured is not None else ""
        lines.append(f"{'PASS' if t.ok else 'FAIL'}  {t.task:<24} {detail}")
        lines += [f"      {p}" for p in t.problems + t.notes]
    for hole in report.holes:
        where = f"{hole.task} after {hole.after} (row {hole.after_tasks})"
        if hole.filled:
            lines.append(f"FILLED  accuracy-matrix entry of {where}, confirmed by {hole.confirmed_by}")
        else:
            lines.append(f"HOLE    accuracy-matrix entry of {where} not filled: {hole.reason}")
    mode = "exact" if tolerance == 0 else f"tolerance {tolerance}"
    mode += ", probes only" if probe_only else ""
    record = report.record
    if not record.get("recorded", True):
        lines.append(f"NOTE    not recorded in the registry as its latest audit: {record.get('reason')}")
    lines += [
        f"NOTE    {name}: not recorded in the registry ({why})" for name, why in record.get("left_out", {}).items()
    ]
    lines.append(f"audit {'passed' if report.ok else 'FAILED'} ({len(report.tasks)} tasks, {mode})")
    emit(report.to_dict(), as_json, "\n".join(lines))
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

    from continual_adapters.report.reporting import format_markdown, stream_report, write_plots

    data = stream_report(open_registry(ctx))
    if task_id:
        from continual_adapters.report.identification import evaluate_identification
        from continual_adapters.stream.runner import Runner

        quiet_libraries(True)
        data["task_identification"] = evaluate_identification(Runner(open_registry(ctx), progress=False))
    if plots:
        data["plots"] = [str(p) for p in write_plots(data, plots)]
    text = format_markdown(data)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    emit(data, as_json, text)
