"""A fork server for the crash and concurrency tests: imports cadapt once, then forks each add-task.

Starting `python -m continual_adapters` costs seconds of imports (torch, transformers, scipy) on a
2-core machine, which would make a loop of 50 kill -9s take minutes. This process imports the
same modules once and forks a child per request; the child runs the very code that
`python -m continual_adapters add-task ...` runs (the click entry point), so a SIGKILL lands in
a real add-task. The parent never runs torch code, so forking it is safe.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout. Every request
carries "base_args" (the cadapt arguments before `add-task`, i.e. the registry) and "task_args"
(those after the task name).
  {"op": "add", "name": N, "delay": seconds|null, "crash_at": step|null, ...}
      fork one add-task; SIGKILL it after `delay` seconds if it is still running.
  {"op": "many", "names": [...], ...}   fork one add-task per name at once and wait for all.
  {"op": "kill_in_bar_lock", ...}   fork a child that takes tqdm's lock and SIGKILL it there.
  {"op": "warmup", ...}   one add-task in the server itself, on a scratch registry (see warm_up).
Replies give each child's exit code (negative: killed by that signal), whether it was killed,
its wall time and the tail of its stderr (children's stderr goes to files in LOG_DIR).

Usage: python reliability_worker.py LOG_DIR
"""

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
import traceback

import torch
import tqdm
import transformers
from transformers import AutoModel, AutoTokenizer, BertModel, BertTokenizerFast  # noqa: F401  (lazy imports, done once)

from continual_adapters.cli import cli
from continual_adapters.stream.runner import Runner  # noqa: F401  (imported here so children need not)

# No helper thread may hold a lock at the moment of a fork, or the child waits on it forever:
# one intra-op thread, so torch runs every op on the calling thread and starts no compute pool,
# and no tqdm monitor thread (it takes tqdm's lock every few seconds; a child that inherits the
# lock held hangs in its first progress bar).
torch.set_num_threads(1)
tqdm.tqdm.monitor_interval = 0
# No lock shared between processes either: tqdm's default lock includes a multiprocessing RLock (a
# semaphore that every forked child shares), and a child killed -9 while it holds it (each bar
# takes it when created) leaves it held for good, so every later child hangs in its first bar.
# A plain thread lock is copied into each child instead, so a kill takes its copy with it.
tqdm.tqdm.set_lock(threading.RLock())
CHILD_TIMEOUT = 300.0
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
LOG_DIR = sys.argv[1]


def spawn(request: dict, name: str, log: str) -> int:
    open(log, "w").close()
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(os.open(log, os.O_WRONLY), 2)
        if request.get("crash_at"):
            os.environ["CADAPT_CRASH_AT"] = request["crash_at"]
        cli.main(args=request["base_args"] + ["add-task", name] + request["task_args"], prog_name="cadapt")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def result(pid: int, status: int, killed: bool, started: float, log: str, timed_out: bool = False) -> dict:
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    with open(log, errors="replace") as fh:
        tail = fh.read()[-2000:]
    return {
        "code": code,
        "killed": killed,
        "timed_out": timed_out,
        "elapsed": time.monotonic() - started,
        "stderr": tail,
    }


def _kill(pid: int) -> int:
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def add(request: dict, n: int) -> dict:
    """A child still running after CHILD_TIMEOUT is killed and reported as timed out, so a hang
    fails the test instead of stalling it."""
    log = os.path.join(LOG_DIR, f"{n}-{request['name']}.err")
    started = time.monotonic()
    pid = spawn(request, request["name"], log)
    delay = request.get("delay")
    limit = CHILD_TIMEOUT if delay is None else min(delay, CHILD_TIMEOUT)
    while time.monotonic() - started < limit:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return result(pid, status, False, started, log)
        time.sleep(0.002)
    status = _kill(pid)
    # A child that exited just before the signal is a zombie the kill cannot touch: not killed.
    return result(pid, status, os.WIFSIGNALED(status), started, log, timed_out=delay is None)


def many(request: dict, n: int) -> dict:
    started = time.monotonic()
    logs = {name: os.path.join(LOG_DIR, f"{n}-{name}.err") for name in request["names"]}
    pids = {spawn(request, name, log): name for name, log in logs.items()}
    results = {}
    while pids:
        for pid in list(pids):
            done, status = os.waitpid(pid, os.WNOHANG)
            late = not done and time.monotonic() - started > CHILD_TIMEOUT
            if done or late:
                name = pids.pop(pid)
                results[name] = result(pid, _kill(pid) if late else status, late, started, logs[name], late)
        time.sleep(0.01)
    return {"results": results}


def kill_in_bar_lock(request: dict, n: int) -> dict:
    """Fork a child that takes tqdm's lock (as every new progress bar does) and SIGKILL it while it
    holds it: the moment after which, were the lock shared between processes, no child could
    ever make a progress bar again."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if not pid:
        tqdm.tqdm.get_lock().acquire()
        os.write(write_end, b"1")
        time.sleep(CHILD_TIMEOUT)
        os._exit(0)
    held = os.read(read_end, 1) == b"1"
    os.close(read_end)
    os.close(write_end)
    return {"held": held, "code": -os.WTERMSIG(_kill(pid))}


def warm_up(request: dict) -> dict:
    """One add-task in this process, on a scratch registry: the first forward and backward pass and
    the encoder loading do one-time work (seconds here) that every child would otherwise repeat."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(args=request["base_args"] + ["add-task", "warmup"] + request["task_args"], prog_name="cadapt")
    except SystemExit as exc:
        if exc.code:
            raise
    return {
        "python_threads": [t.name for t in threading.enumerate()],
        "tqdm_process_lock": getattr(tqdm.std.TqdmDefaultWriteLock, "mp_lock", None) is not None,
    }


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for n, line in enumerate(sys.stdin):
        request = json.loads(line)
        handler = {"add": add, "many": many, "kill_in_bar_lock": kill_in_bar_lock}.get(request["op"])
        reply = handler(request, n) if handler else warm_up(request)
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
