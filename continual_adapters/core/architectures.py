"""Where each supported encoder keeps the modules adapters wrap: one small table, no forward code.

Every entry names, relative to the Hugging Face base model, its list of layers and, inside a
layer, the last module of each sub-layer before the residual add (the adapter goes after it)
and the LayerNorm after that add (each task gets its own copy), and the names of the attention
query and value projections, which `--method lora` adapts by default (Hu et al. 2021 adapt
W_q and W_v; PEFT matches these names against the end of each module's path). Supporting a
new encoder family is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from continual_adapters.core.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureMap:
    """Attribute paths, relative to the base model, of the modules we wrap."""

    layers: str
    attention_out: str
    attention_norm: str
    ffn_out: str
    ffn_norm: str
    #: Module names (PEFT `target_modules`) of the attention query and value projections.
    lora_targets: tuple[str, ...]


_BERT_LIKE = ArchitectureMap(
    layers="encoder.layer",
    attention_out="attention.output.dropout",
    attention_norm="attention.output.LayerNorm",
    ffn_out="output.dropout",
    ffn_norm="output.LayerNorm",
    lora_targets=("query", "value"),
)

ARCHITECTURES: dict[str, ArchitectureMap] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "mpnet": ArchitectureMap(
        layers="encoder.layer",
        attention_out="attention.dropout",
        attention_norm="attention.LayerNorm",
        ffn_out="output.dropout",
        ffn_norm="output.LayerNorm",
        lora_targets=("q", "v"),
    ),
    "distilbert": ArchitectureMap(
        layers="transformer.layer",
        attention_out="attention.out_lin",
        attention_norm="sa_layer_norm",
        ffn_out="ffn.dropout",
        ffn_norm="output_layer_norm",
        lora_targets=("q_lin", "v_lin"),
    ),
}


def architecture_for(model_type: str) -> ArchitectureMap:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
