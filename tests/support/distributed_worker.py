"""One process of a data-parallel training run (launched by tests/training/test_distributed.py).

Trains a tiny dropout-free task with `train_task` on 45 and on 47 rows (global batch 10: the last
batch is 5 rows, all on rank 0 of two, or 7, split 5 and 2) and writes each run's weights to
OUT/rank<RANK>-<ROWS>.safetensors and its loss curve to OUT/rank<RANK>-<ROWS>.json, so the test can
compare the processes with each other and with a single-process run.
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from continual_adapters.core.config import TaskSpec, TrainConfig
from continual_adapters.core.model import ContinualModel
from continual_adapters.training.loop import Encoded, train_task
from tests.support.tiny import tiny_encoder


class Tokenizer:
    """Pads token-id lists like a Hugging Face tokenizer, enough for train_task."""

    def pad(self, features, return_tensors="pt", padding="longest", max_length=None):
        width = max_length or max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), width, dtype=torch.long)
        mask = torch.zeros(len(features), width, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask}


def data(n: int, seed: int) -> Encoded:
    generator = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(n):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        features.append({"input_ids": torch.randint(5, 120, (length,), generator=generator).tolist()})
    targets = torch.tensor([int(f["input_ids"][0] % 2) for f in features])
    return Encoded(features, targets)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    encoder = tiny_encoder()
    encoder.config.hidden_dropout_prob = 0.0
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model = ContinualModel(encoder, Tokenizer())
    config = TrainConfig(epochs=2, batch_size=10, lr=1e-2, seed=3)
    rank = os.environ.get("RANK", "single")
    for rows in (45, 47):
        model.add_task(TaskSpec(f"t{rows}", labels=("a", "b"), head_dropout=0.0))
        result = train_task(model, f"t{rows}", data(rows, 1), data(20, 2), config, "accuracy", progress=False)
        state = {k: v.contiguous() for k, v in model.task_modules(f"t{rows}").state_dict().items()}
        save_file(state, str(out / f"rank{rank}-{rows}.safetensors"))
        curve = {"train_loss": [h["train_loss"] for h in result.history], "steps": result.steps}
        (out / f"rank{rank}-{rows}.json").write_text(json.dumps({**curve, "tokens": result.train_tokens}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
