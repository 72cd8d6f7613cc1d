"""Pieces of the rebase tests: a second tiny encoder that differs from `tiny_encoder_dir` in every
size (so no adapter or head of the first could load on it), and tiny source registries."""

from __future__ import annotations

from pathlib import Path

from continual_adapters.core.encoder import save_tiny_encoder
from tests.support.serving import build_registry

#: The source stream: three tasks, each registered with its own --max-length (carried over as recorded).
TASKS = {"alpha": 32, "beta": 16, "gamma": 24}


def save_second_encoder(folder: Path) -> str:
    """A tiny random BERT of another shape than conftest's (48 wide, 3 layers; that one is 32 wide,
    2 layers), with the same tokenizer, saved like a hub checkpoint."""
    return save_tiny_encoder(folder, seed=1, hidden_size=48, layers=3)


def build_source(root: Path, encoder: str) -> Path:
    """A 3-task adapters registry on `encoder`, each task's data in a folder of its own (`root/data-NAME`)."""
    return build_registry(root, encoder, TASKS)


def build_method_source(url: Path, root: Path, encoder: str, method: str, names: tuple[str, ...], *extra: str) -> Path:
    """A registry of tiny tasks trained with `--method method` (no adapter), each on data of its own."""
    from tests.support.cli import cli_ok
    from tests.support.reliability import task_args, write_tiny_data

    for seed, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        args = task_args(write_tiny_data(root / name, seed=seed), encoder)
        args[args.index("--adapter-size") + 1] = "0"
        cli_ok("--registry", url, "add-task", name, *args, "--method", method, *extra)
    return url
