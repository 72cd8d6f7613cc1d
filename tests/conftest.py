"""Shared fixtures: tiny random encoders (no downloads) and the real data directory."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

from continual_adapters.model import ContinualModel

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CADAPT_DATA_DIR", ROOT.parent / "shared" / "data"))

TINY = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "xlm-roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "electra": dict(hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64),
    "mpnet": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
}


def tiny_encoder(model_type: str = "bert", seed: int = 0):
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, vocab_size=120, max_position_embeddings=64, **TINY[model_type])
    return AutoModel.from_config(config).eval()


def tiny_model(model_type: str = "bert", seed: int = 0) -> ContinualModel:
    return ContinualModel(tiny_encoder(model_type, seed)).eval()


def tiny_batch(batch: int = 3, length: int = 9, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, -3:] = 0
    return ids, mask


@pytest.fixture
def data_dir() -> Path:
    if not (DATA_DIR / "sst2" / "train.jsonl").exists():
        pytest.fail(f"real data not found at {DATA_DIR}; set CADAPT_DATA_DIR")
    return DATA_DIR


def cli_ok(*args, env=None):
    """Runs `cadapt ARGS` in-process and fails the test with its output if it did not exit 0."""
    from click.testing import CliRunner

    from continual_adapters.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def real_task_args(data_dir: Path, name: str, max_train: int, max_eval: int = 200, epochs: int = 2):
    folder = data_dir / name
    args = ["add-task", name, "--train", folder / "train.jsonl", "--validation", folder / "validation.jsonl",
            "--test", folder / "test.jsonl", "--max-train", max_train, "--max-eval", max_eval,
            "--epochs", epochs, "--lr", "3e-3", "--quiet"]
    if (folder / "dataset.json").read_text().count('"pair": true'):
        args += ["--text-pair-column", "text_pair"]
    return args


@pytest.fixture(scope="session")
def stream(tmp_path_factory):
    """A registry holding three real tasks (SST-2, TREC, TweetEval-emotion) on the real default encoder.

    Shared by the runner, CLI, audit and report tests so the real training runs once.
    """
    if not (DATA_DIR / "sst2" / "train.jsonl").exists():
        pytest.fail(f"real data not found at {DATA_DIR}; set CADAPT_DATA_DIR")
    root = tmp_path_factory.mktemp("stream")
    url = str(root / "registry.db")
    cli_ok("--registry", url, "init")
    first = cli_ok("--registry", url, *real_task_args(DATA_DIR, "sst2", 400), "--json")
    second = cli_ok("--registry", url, *real_task_args(DATA_DIR, "trec", 400), "--json")
    third = cli_ok("--registry", url, *real_task_args(DATA_DIR, "tweeteval_emotion", 300), "--json")
    import json

    return {"url": url, "root": root, "outputs": [json.loads(r.output) for r in (first, second, third)]}


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> str:
    """A tiny random BERT saved like a hub checkpoint, with the real MiniLM tokenizer: fast runner tests."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from continual_adapters.model import DEFAULT_ENCODER, local_path_for

    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = AutoTokenizer.from_pretrained(local_path_for(DEFAULT_ENCODER))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """scenarios/smoke.yaml run end to end through the CLI, as CI and users run it."""
    import json

    if not (DATA_DIR / "sst2" / "train.jsonl").exists():
        pytest.fail(f"real data not found at {DATA_DIR}; set CADAPT_DATA_DIR")
    out = tmp_path_factory.mktemp("smoke")
    result = cli_ok("run-scenario", ROOT / "scenarios" / "smoke.yaml", "--out", out, "--data-dir", DATA_DIR,
                    "--results", out / "results.md", "--quiet", "--json")
    return {"out": out, "data": json.loads(result.stdout)}
