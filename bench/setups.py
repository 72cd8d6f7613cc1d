"""One benchmark setup, built and timed in a process of its own; bench/bench.py spawns this.

A fresh process per setup keeps one setup's allocator state, compile caches and thread pools
from leaking into the next. It reads the setup as JSON from its argument, and prints one line,
``BENCH_RESULT {json}``: the timings, the peak memory and the library versions.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

from measure import Memory, autocast, time_steps, with_clock

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "BENCH_RESULT "

TRAIN_SETUPS = [
    "full",
    "floor",
    "floor_compiled",
    "cadapt",
    "cadapt_ref",
    "cadapt_compiled",
    "cadapt_fused_adamw",
    "adapterhub",
    "peft_lora",
]
INFER_SETUPS = [
    "bare_infer",
    "bare_compiled_infer",
    "cadapt_infer",
    "cadapt_ref_infer",
    "cadapt_compiled_infer",
    "adapterhub_infer",
    "peft_lora_infer",
]
REAL_SETUPS = ["real_dynamic", "real_padded"]
# With --adapterhub-python (AdapterHub pins transformers 4.x), the floor and the bare model are
# also measured in that interpreter, so AdapterHub is compared with its own transformers.
PEER_ENV_SETUPS = ["adapterhub_env_floor", "adapterhub_env_bare_infer"]
ALL_SETUPS = TRAIN_SETUPS + INFER_SETUPS + REAL_SETUPS + PEER_ENV_SETUPS
COMPILED = {s for s in ALL_SETUPS if "compiled" in s}

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=512
)


def _versions() -> dict:
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("peft", "adapters"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - optional, absent or broken
            pass
    return out


def _minilm_path() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from continual_adapters.core.encoder import DEFAULT_ENCODER, local_path_for

    return local_path_for(DEFAULT_ENCODER)


def build_encoder(spec: dict):
    """The same encoder for every setup: seeded random weights from a config, or MiniLM."""
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(spec["seed"])
    attn = spec.get("attn_implementation") or "sdpa"
    if spec["model"] == "minilm":
        encoder = AutoModel.from_pretrained(spec["model_path"], attn_implementation=attn)
    elif spec["model"] == "bert-base":
        encoder = BertModel(BertConfig(attn_implementation=attn))
    elif spec["model"] == "tiny":
        encoder = BertModel(BertConfig(vocab_size=30522, attn_implementation=attn, **TINY))
    else:
        raise SystemExit(f"unknown model {spec['model']!r}")
    return encoder


def _tokenizer(spec: dict):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec["tokenizer_path"])


def _pooled_classifier(encoder, hidden: int, labels: int, floor: bool):
    """Mean pooling + dropout + linear head: the pooling and head ContinualModel uses."""
    from torch import nn

    class Core(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(0.1)
            self.out = nn.Linear(hidden, labels)

        def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
            if inputs_embeds is not None:
                hidden_states = self.encoder(
                    inputs_embeds=inputs_embeds, attention_mask=attention_mask
                ).last_hidden_state
            else:
                hidden_states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.out(self.dropout(pooled))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.core = Core()

        def forward(self, input_ids, attention_mask):
            if floor:
                # The frozen floor: the word-embedding lookup becomes a leaf that requires grad,
                # so backward runs through every layer (positions, LayerNorm, all blocks).
                embeds = encoder.get_input_embeddings()(input_ids).detach().requires_grad_(True)
                return self.core(inputs_embeds=embeds, attention_mask=attention_mask)
            return self.core(input_ids=input_ids, attention_mask=attention_mask)

    return Model()


def _hidden_size(encoder) -> int:
    config = encoder.config
    return getattr(config, "hidden_size", None) or config.dim


def build_setup(spec: dict):
    """Returns (model, trainable parameters or None, module to compile or None, info)."""
    setup = spec["setup"].removesuffix("_infer").removeprefix("adapterhub_env_")
    encoder = build_encoder(spec)
    hidden = _hidden_size(encoder)
    info: dict = {"attn_implementation": encoder.config._attn_implementation}
    labels = spec["labels"]
    if setup.startswith("cadapt"):
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from continual_adapters import AdapterConfig, ContinualModel, TaskSpec
        from continual_adapters.core import adapter as adapter_module

        if setup == "cadapt_ref":
            adapter_module.set_fast_path(False)
        info["fast_path"] = adapter_module.fast_path_enabled()
        model = ContinualModel(encoder)
        names = tuple(f"c{i}" for i in range(labels))
        model.add_task(TaskSpec("bench", labels=names, adapter=AdapterConfig(bottleneck=spec["bottleneck"])))
        model.set_task("bench")
        params = [p for p in model.task_modules("bench").parameters() if p.requires_grad]
        info["trainable"] = sum(p.numel() for p in params)
        return model, params, model if setup == "cadapt_compiled" else None, info
    if setup in ("full", "floor", "floor_compiled", "bare", "bare_compiled"):
        floor = setup.startswith("floor")
        if setup != "full":
            encoder.requires_grad_(False)
        model = _pooled_classifier(encoder, hidden, labels, floor)
        params = [p for p in model.parameters() if p.requires_grad]
        info["trainable"] = sum(p.numel() for p in params)
        return model, params, model.core if "compiled" in setup else None, info
    if setup == "peft_lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise Skip(f"peft not importable: {exc}") from None
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"])
        wrapped = get_peft_model(encoder, config)
        model = _pooled_classifier(wrapped, hidden, labels, floor=False)
        params = [p for p in model.parameters() if p.requires_grad]
        info["trainable"] = sum(p.numel() for p in params)
        info["lora"] = {"r": 8, "alpha": 16, "targets": ["query", "value"]}
        return model, params, None, info
    if setup == "adapterhub":
        try:
            import adapters
        except Exception as exc:  # noqa: BLE001 - may be absent or incompatible with transformers
            raise Skip(f"adapters not importable: {type(exc).__name__}: {exc}") from None
        adapters.init(encoder)
        factor = hidden / spec["bottleneck"]
        encoder.add_adapter("bench", config=adapters.DoubleSeqBnConfig(reduction_factor=factor))
        encoder.train_adapter("bench")
        encoder.set_active_adapters("bench")
        model = _pooled_classifier(encoder, hidden, labels, floor=False)
        for p in model.core.out.parameters():
            p.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        downs = [m for n, m in encoder.named_modules() if n.endswith("adapter_down.0")]
        info["trainable"] = sum(p.numel() for p in params)
        info["adapterhub_bottleneck"] = downs[0].out_features if downs else None
        info["adapterhub_config"] = "double_seq_bn"
        return model, params, None, info
    raise SystemExit(f"unknown setup {spec['setup']!r}")


class Skip(Exception):
    """An optional peer is not installed here: the row is reported as skipped, not failed."""


def run_synthetic(spec: dict) -> dict:
    import torch

    device = torch.device(spec["device"])
    model, params, to_compile, info = build_setup(spec)
    model.to(device)
    generator = torch.Generator().manual_seed(spec["seed"] + 1)
    ids = torch.randint(1000, 20000, (spec["batch"], spec["seq"]), generator=generator).to(device)
    mask = torch.ones_like(ids)
    targets = torch.randint(0, spec["labels"], (spec["batch"],), generator=generator).to(device)
    if to_compile is not None:
        compile_kwargs = {"mode": spec["compile_mode"]} if spec.get("compile_mode") else {}
        to_compile.compile(**compile_kwargs)
        info["compile_mode"] = spec.get("compile_mode") or "default"
    inference = spec["setup"].endswith("_infer")
    if inference:
        model.eval()

        def step():
            with torch.inference_mode(), autocast(device):
                model(ids, mask)
    else:
        model.train()
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=spec.get("fused_adamw") or None)
        info["optimizer"] = "AdamW(fused=True)" if spec.get("fused_adamw") else "AdamW(default)"

        def step():
            with autocast(device):
                logits = model(ids, mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    timing = time_steps(step, spec, device)
    tokens = spec["batch"] * spec["seq"]
    timing["tokens_per_s"] = tokens / (timing["median_ms"] / 1000)
    return {**info, **timing}


def run_real(spec: dict) -> dict:
    import torch

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from continual_adapters import AdapterConfig, ContinualModel, TaskSpec
    from continual_adapters.core.config import TrainConfig
    from continual_adapters.data.reader import encode_labels, label_names, load_split, read_dataset_json
    from continual_adapters.training.loop import encode, train_task

    folder = Path(spec["real_data_dir"]) / spec["real_dataset"]
    meta = read_dataset_json(folder)
    pair = "text_pair" if meta.get("pair") else None
    train = load_split(folder / "train.jsonl", pair_column=pair, limit=spec["real_max_train"], seed=13)
    val = load_split(folder / "validation.jsonl", pair_column=pair, limit=spec["real_max_eval"], seed=13)
    labels = label_names(train, list(meta.get("labels") or []))
    device = torch.device(spec["device"])
    model = ContinualModel(build_encoder(spec), _tokenizer(spec)).to(device)
    task = TaskSpec("bench", labels=tuple(labels), adapter=AdapterConfig(bottleneck=spec["bottleneck"]))
    model.add_task(task)
    tok = model.tokenizer
    train_enc = encode(
        tok,
        train.texts,
        train.pairs,
        encode_labels(train, labels, "classification", "train"),
        spec["seq"],
        "classification",
    )
    val_enc = encode(
        tok,
        val.texts,
        val.pairs,
        encode_labels(val, labels, "classification", "validation"),
        spec["seq"],
        "classification",
    )
    config = TrainConfig(
        epochs=1,
        batch_size=spec["real_batch"],
        max_length=spec["seq"],
        seed=0,
        pad_to_max_length=spec["setup"] == "real_padded",
    )
    memory = Memory(device)
    memory.reset()
    c0 = time.process_time()
    result = train_task(model, "bench", train_enc, val_enc, config, "accuracy", progress=False)
    cpu_s = time.process_time() - c0
    lengths = [len(f["input_ids"]) for f in train_enc.features]
    out = {
        "dataset": spec["real_dataset"],
        "examples": len(train_enc),
        "steps": result.steps,
        "train_tokens": result.train_tokens,
        "wall_time_s": result.wall_time_s,
        "cpu_time_s": cpu_s,
        "wall_median_ms": 1000 * result.wall_time_s / max(1, result.steps),
        "cpu_median_ms": 1000 * cpu_s / max(1, result.steps),
        "mean_length": statistics.fmean(lengths),
        "max_length_seen": max(lengths),
        "pad_to_max_length": config.pad_to_max_length,
        "validation_examples": len(val_enc),
        "peak_mb": memory.peak_mb(),
        "memory_method": memory.method,
    }
    out = with_clock(out, spec)
    out["tokens_per_s"] = result.train_tokens / (out["median_ms"] * max(1, result.steps) / 1000)
    return out


def worker(spec: dict) -> None:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["setup"] == "cadapt_fused_adamw":
        spec = {**spec, "setup": "cadapt", "fused_adamw": True}
    status, payload = "ok", {}
    try:
        payload = run_real(spec) if spec["setup"] in REAL_SETUPS else run_synthetic(spec)
    except Skip as exc:
        status, payload = "skipped", {"reason": str(exc)}
    payload.update(status=status, versions=_versions(), threads=torch.get_num_threads())
    print(RESULT_TAG + json.dumps(payload), flush=True)


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
