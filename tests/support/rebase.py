"""Pieces of the rebase tests: a second tiny encoder that differs from `tiny_encoder_dir` in every
size (so no adapter or head of the first could load on it), and tiny source registries."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.serving import build_registry

#: The source stream: three tasks, each registered with its own --max-length (carried over as recorded).
TASKS = {"alpha": 32, "beta": 16, "gamma": 24}


def save_second_encoder(folder: Path, tokenizer_from: str) -> str:
    """A tiny random BERT of another shape than conftest's (48 wide, 3 layers; that one is 32 wide,
    2 layers), with the same tokenizer, saved like a hub checkpoint."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=128,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


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
