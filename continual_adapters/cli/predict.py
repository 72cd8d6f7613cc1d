"""`cadapt predict`: label inputs with registered tasks."""

from __future__ import annotations

import json

import click

from continual_adapters.cli.main import cli, json_option, open_registry, quiet_libraries


@cli.command()
@click.argument("texts", nargs=-1)
@click.option("--task", default=None, help="Task name, or 'auto' to predict each input's task.")
@click.option(
    "--file",
    "input_file",
    type=click.Path(),
    default=None,
    help="JSONL/CSV/TSV (columns) or TXT (one text per line); '-' or nothing: stdin.",
)
@click.option("--text-column", default="text", show_default=True)
@click.option("--text-pair-column", default=None)
@click.option("--task-column", default=None, help="Column naming each row's task: one mixed batch.")
@click.option("--top-k", type=int, default=1, show_default=True, help="Labels to show per input.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default=None)
@json_option
@click.pass_context
def predict(
    ctx, texts, task, input_file, text_column, text_pair_column, task_column, top_k, batch_size, device, as_json
):
    """Label inputs with registered tasks (one, one per row, or auto-identified)."""
    from continual_adapters.stream.runner import Runner
    from continual_adapters.stream.serving import predict_inputs, read_inputs

    quiet_libraries(True)
    inputs = read_inputs(texts, input_file, text_column, text_pair_column, task_column)
    runner = Runner(open_registry(ctx), device=device, progress=False)
    for text, p in zip(inputs.texts, predict_inputs(runner, inputs, task, batch_size), strict=True):
        top = p.top(top_k) if p.probabilities else [(p.label, p.score)]
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "text": text,
                        "task": p.task,
                        "label": p.label,
                        "score": p.score,
                        "top": [{"label": k, "score": v} for k, v in top],
                    }
                )
            )
        else:
            shown = "  ".join(f"{k} {v:.3f}" for k, v in top)
            click.echo(f"{p.task}\t{shown}\t{text[:80]}")
