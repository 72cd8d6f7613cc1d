#!/usr/bin/env python
"""Load test of `cadapt serve` on the loopback address: cross-task batching against its baselines.

Closed-loop clients (threads, keep-alive connections) send requests of 1 to 8 rows for a fixed time;
each row's task is drawn at random from the first T tasks of the registry, T in 1, 8 and 40. Three
ways of serving the same requests, measured one after the other (never at once):

  (a) batched    one `cadapt serve` process, requests merged into mixed-task batches (defaults:
                 --max-batch 64 --max-wait-ms 5);
  (b) unbatched  the same server with --no-batching: each request is one forward pass of its rows
                 (still one pass for its rows of several tasks), no request waits for another;
  (c) per task   one `cadapt serve --tasks NAME` process per task, each holding its own encoder; a
                 request's rows are split by task and sent to those processes in parallel, and the
                 request takes as long as its slowest part. Skipped when T exceeds --max-processes
                 (each process holds a whole encoder: memory is what this setting runs out of).

Reported per (T, setting): rows per second, request latency p50 and p99, errors. The issue's goals:
(a) >= 3x (b) in rows/s at 40 tasks on CPU, and p99 under 1 s at the measured load.

    python bench/serve.py                                  # MiniLM, a synthetic 40-task registry
    python bench/serve.py --registry runs/x/registry.db    # an existing registry (>= 40 ready tasks)
    python bench/serve.py --quick                          # tiny random encoder, 1 and 2 tasks, 2 s:
                                                           #   checks the script runs, claims nothing
    python bench/serve.py --build-only                     # only build the 40-task registry (once)

The synthetic registry (built once in --workdir, reused) trains each task one epoch on 16 generated
rows: its labels are meaningless, its cost per row is the real one. The client runs in this
process and shares the CPU with the servers; the JSON (bench/results/serve.json) records the
machine, versions and load, and the table and goals replace the generated part of the serving
section of docs/performance.md (serve_doc.py; --doc names another file, none under --quick).
Servers' stderr goes to --workdir/logs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve_doc import goals, section, write_section  # noqa: E402

from continual_adapters.core.encoder import save_tiny_encoder  # noqa: E402

WORDS = "good bad film plot actor scene slow funny dull moving great awful story music long short".split()


def sentences(count: int) -> list[str]:
    path = Path(os.environ.get("CADAPT_DATA_DIR", ROOT.parent / "shared" / "data")) / "sst2" / "test.jsonl"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()[:count]
        return [json.loads(line)["text"] for line in lines]
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(5 + i % 20)) for i in range(count)]


def build_registry(workdir: Path, count: int, encoder: str | None) -> Path:
    """`count` tasks task00, task01, ... (2 to 4 labels) on `encoder`; those present are kept."""
    from continual_adapters.core.config import AdapterConfig, TrainConfig
    from continual_adapters.data.taskdata import DataSpec
    from continual_adapters.registry import Registry
    from continual_adapters.stream.runner import Runner

    url = workdir / "registry.db"
    runner = Runner(Registry(url), encoder=encoder, progress=False)
    present = {t.name for t in runner.registry.ensure().tasks()}
    for t in range(count):
        name = f"task{t:02d}"
        if name in present:
            continue
        rng = random.Random(t)
        labels = [f"l{i}" for i in range(2 + t % 3)]
        folder = workdir / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", 16), ("test", 8)):
            with (folder / f"{split}.jsonl").open("w") as fh:
                for i in range(rows):
                    text = " ".join(rng.choice(WORDS) for _ in range(4 + i % 6))
                    fh.write(json.dumps({"text": text, "label": labels[i % len(labels)]}) + "\n")
        started = time.perf_counter()
        runner.add_task(
            name,
            DataSpec(train=str(folder / "train.jsonl"), test=str(folder / "test.jsonl")),
            adapter=AdapterConfig(bottleneck=64),
            train=TrainConfig(epochs=1, lr=3e-3),
        )
        print(f"  added {name} ({time.perf_counter() - started:.1f} s)", flush=True)
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A `cadapt serve` subprocess on a free loopback port; stopped by SIGTERM (then SIGKILL). Its
    stderr goes to a file in `logs` (a pipe nobody reads would block the server once full)."""

    def __init__(self, registry: Path, args: list[str], threads: int, logs: Path):
        self.port = free_port()
        command = [sys.executable, "-m", "continual_adapters", "--registry", str(registry), "serve"]
        command += ["--port", str(self.port), "--poll-s", "0", "--log-level", "warning", "--max-queue", "4096"]
        command += ["--threads", str(threads), *args]
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / f"serve-{self.port}.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)

    def wait_ready(self, seconds: float = 600) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cadapt serve exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("cadapt serve did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Client:
    """One keep-alive connection per (thread, port)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def post(self, port: int, rows: list[dict]) -> int:
        """The reply's status, or 599 when no reply came. A kept-alive connection the server has
        closed meanwhile (uvicorn drops idle ones after 5 s, which the many threads of the
        per-task setting leave idle) is replaced and the request sent once more on a new one."""
        conns = self.local.__dict__.setdefault("conns", {})
        body = json.dumps({"inputs": rows}).encode()
        for attempt in range(2):
            reused = port in conns
            if not reused:
                conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn = conns[port]
            try:
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                return response.status
            except OSError:
                conn.close()
                del conns[port]
                if not reused or attempt:
                    break
        return 599


def run_load(send, tasks: int, texts: list[str], clients: int, seconds: float, max_requests: int) -> dict:
    """Closed loop: each client sends its next request when the last is answered."""
    latencies: list[float] = []
    rows_done = [0]
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop_at:
            with lock:
                if len(latencies) + errors[0] >= max_requests:
                    return
            rows = [
                {"text": rng.choice(texts), "task": f"task{rng.randrange(tasks):02d}"} for _ in range(rng.randint(1, 8))
            ]
            started = time.perf_counter()
            ok = send(rows)
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                    rows_done[0] += len(rows)
                else:
                    errors[0] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "requests": len(latencies),
        "rows": rows_done[0],
        "errors": errors[0],
        "seconds": wall,
        "rows_per_s": rows_done[0] / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def measure(setting: str, send, args, texts: list[str]) -> list[dict]:
    out = []
    for tasks in args.tasks:
        run_load(send, tasks, texts, args.clients, min(1.0, args.seconds), 4 * args.clients)  # warm-up
        result = run_load(send, tasks, texts, args.clients, args.seconds, args.max_requests)
        result.update(setting=setting, tasks=tasks, clients=args.clients)
        print(
            f"{tasks:>5} {setting:<10} {result['rows_per_s']:>9.1f} {result['p50_ms']:>8.1f} "
            f"{result['p99_ms']:>8.1f} {result['requests']:>8} {result['errors']:>6}",
            flush=True,
        )
        out.append(result)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None, help="An existing registry with tasks task00..")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cadapt-bench-serve"))
    parser.add_argument("--encoder", default=None, help="Encoder of the synthetic registry (default: MiniLM).")
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 8, 40])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=100_000, help="Bound on requests per measurement.")
    parser.add_argument("--max-processes", type=int, default=16, help="Most processes setting (c) may start.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the one server of (a) and (b), shared out among the processes of (c) "
        "(default: the CPU count; 1 under --quick). More threads than idle cores makes torch's "
        "OpenMP workers wait on each other: on a busy machine, measure with fewer.",
    )
    parser.add_argument("--settings", default="batched,unbatched,per-task")
    parser.add_argument("--quick", action="store_true", help="Tiny random encoder, 1 and 2 tasks, 2 s, 4 clients.")
    parser.add_argument("--build-only", action="store_true", help="Build (or complete) the registry, measure nothing.")
    parser.add_argument("--out", type=Path, default=None, help="JSON results [bench/results/serve.json].")
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="Markdown file whose generated serving section is replaced [docs/performance.md; none under --quick].",
    )
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seconds, args.clients = [1, 2], 2.0, 4
        args.threads = args.threads or 1
        args.workdir = args.workdir.with_name(args.workdir.name + "-quick")
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.out or (args.workdir / "serve_quick.json" if args.quick else ROOT / "bench" / "results" / "serve.json")
    doc = args.doc or (None if args.quick else ROOT / "docs" / "performance.md")
    load_start = os.getloadavg()
    encoder = save_tiny_encoder(args.workdir / "encoder") if args.quick and not args.encoder else args.encoder
    registry = args.registry or build_registry(args.workdir, max(args.tasks), encoder)
    if args.build_only:
        print(f"registry ready: {registry}")
        return 0
    texts = sentences(200)
    settings = args.settings.split(",")
    threads = args.threads or os.cpu_count() or 1
    client = Client()
    logs = args.workdir / "logs"
    rows: list[dict] = []
    skipped: dict[int, str] = {}
    print(f"{'tasks':>5} {'setting':<10} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>8} {'errors':>6}")
    for setting in ("batched", "unbatched"):
        if setting not in settings:
            continue
        server = ServerProcess(registry, [] if setting == "batched" else ["--no-batching"], threads, logs)
        try:
            server.wait_ready()
            rows += measure(setting, lambda r, port=server.port: client.post(port, r) == 200, args, texts)
        finally:
            server.stop()
    if "per-task" in settings:
        count = min(max(args.tasks), args.max_processes)
        share = max(1, threads // count)
        servers = [ServerProcess(registry, ["--tasks", f"task{t:02d}"], share, logs) for t in range(count)]
        pool = ThreadPoolExecutor(8 * args.clients)
        try:
            for server in servers:
                server.wait_ready()

            def split(r: list[dict]) -> bool:
                parts: dict[int, list[dict]] = {}
                for row in r:
                    parts.setdefault(int(row["task"][4:]), []).append(row)
                sent = [pool.submit(client.post, servers[t].port, part) for t, part in parts.items()]
                return all(f.result() == 200 for f in sent)

            args_c = argparse.Namespace(**{**vars(args), "tasks": [t for t in args.tasks if t <= count]})
            rows += measure("per-task", split, args_c, texts)
            for t in (t for t in args.tasks if t > count):
                skipped[t] = f"{t} processes > --max-processes {args.max_processes}: each holds a whole encoder"
                print(f"{t:>5} per-task   not run: {skipped[t]}")
        finally:
            pool.shutdown()
            for server in servers:
                server.stop()
    import torch
    import transformers

    from continual_adapters.registry import Registry

    base = Registry(registry).base_model()
    result = {
        "benchmark": "serve",
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d"),
        "registry": str(registry),
        "registry_note": f"the registry `{args.registry}` ({base.name if base else '?'})"
        if args.registry
        else f"a synthetic registry ({base.name if base else encoder}, adapters of bottleneck 64)",
        "out": str(out.resolve().relative_to(ROOT)) if out.resolve().is_relative_to(ROOT) else str(out),
        "encoder": base.name if base else encoder,
        "clients": args.clients,
        "seconds": args.seconds,
        "rows": rows,
        "skipped": skipped,
        "goals": goals(rows),
        "cpus": os.cpu_count(),
        "threads": threads,
        "load_average": load_start,
        "load_average_end": os.getloadavg(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    for line in result["goals"]:
        print(line)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if doc is not None:
        write_section(doc, section(result))
        print(f"wrote its section of {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
