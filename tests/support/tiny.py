"""Tiny random encoders and batches: unit tests run the real code on models of a few thousand weights."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel

from continual_adapters.core.model import ContinualModel

TINY = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "xlm-roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "electra": dict(
        hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    ),
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
