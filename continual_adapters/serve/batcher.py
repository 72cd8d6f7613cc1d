"""The dynamic cross-task batcher: one worker thread owns the model; requests queue up for it.

A request is a `Job` (its rows and a future). The worker takes the oldest job, then keeps taking
jobs until `max_wait_ms` after that job arrived, while their rows still fit in `max_batch`, and runs all of
them as one mixed-task batch (inference.py): rows of different tasks and different requests share
each encoder pass. Each job then gets its own answers, or its own error (a task removed by a reload
since the request was accepted fails that request alone). With batching off every job runs alone.

The queue is bounded (`max_queue` jobs): `submit` refuses a job at once with `OverloadedError`
when it is full, so overload shows as quick 503s rather than ever-growing latency. A job whose
client gave up (its future cancelled) is skipped.

Reloading the tasks (state.py) is work for the same thread, taken between two batches before any
waiting job, so a forward pass never runs while tasks are attached or detached. Being the only
thread that touches the model is also what keeps the tokenizer and torch single-threaded callers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from continual_adapters.core.errors import CadaptError, OverloadedError
from continual_adapters.serve.config import ServeConfig
from continual_adapters.serve.inference import Answer, Row, check_rows, run_rows
from continual_adapters.serve.metrics import Metrics
from continual_adapters.serve.state import ReloadReport, TaskLoader

log = logging.getLogger("cadapt.serve")


@dataclass
class Job:
    rows: list[Row]
    future: Future[list[Answer]] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Control:
    action: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)


class Batcher:
    """Runs jobs and reloads on one worker thread (see the module docstring)."""

    def __init__(self, loader: TaskLoader, config: ServeConfig, metrics: Metrics):
        self.loader, self.config, self.metrics = loader, config, metrics
        self._jobs: deque[Job] = deque()
        self._controls: deque[_Control] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cadapt-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops taking work; jobs still queued fail with OverloadedError."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)
        while self._jobs:
            job = self._jobs.popleft()
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(OverloadedError("the server is shutting down"))

    @property
    def depth(self) -> int:
        return len(self._jobs)

    def submit(self, rows: list[Row]) -> Job:
        """Queues `rows` as one job, checked against the served tasks now; OverloadedError when the
        queue is full (the caller answers 503), TaskNotFoundError or RequestError for bad rows."""
        check_rows(self.loader.state, rows)
        job = Job(rows)
        with self._wake:
            if self._stopping:
                raise OverloadedError("the server is shutting down")
            if len(self._jobs) >= self.config.max_queue:
                raise OverloadedError(f"the queue is full ({self.config.max_queue} requests waiting)")
            self._jobs.append(job)
            self.metrics.queue_depth(len(self._jobs))
            self._wake.notify()
        return job

    def control(self, action: Callable[[], Any]) -> Future[Any]:
        """Runs `action` on the worker thread before the next batch; its result in the future."""
        item = _Control(action)
        with self._wake:
            self._controls.append(item)
            self._wake.notify()
        return item.future

    def reload(self, verify: bool = False) -> Future[ReloadReport]:
        return self.control(lambda: self.loader.reload(verify=verify))

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._jobs or self._controls):
                    self._wake.wait()
                if self._stopping:
                    return
                controls = list(self._controls)
                self._controls.clear()
            for item in controls:
                self._run_control(item)
            batch = self._collect()
            if batch:
                self._run_batch(batch)

    def _run_control(self, item: _Control) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            item.future.set_result(item.action())
        except BaseException as exc:  # reported to whoever asked; the worker keeps serving
            item.future.set_exception(exc)

    def _collect(self) -> list[Job]:
        """The oldest job, then whatever arrives within `max_wait_ms` of it while the rows fit."""
        merge = self.config.merges
        with self._wake:
            if not self._jobs:
                return []
            batch = [self._jobs.popleft()]
            rows = len(batch[0].rows)
            # Counted from the first job's arrival: under a backlog it has waited already, so the
            # batch closes at once with what is queued instead of adding max_wait_ms to its latency.
            deadline = batch[0].queued_at + self.config.max_wait_ms / 1000
            while merge and rows < self.config.max_batch and not self._controls and not self._stopping:
                if self._jobs:
                    if rows + len(self._jobs[0].rows) > self.config.max_batch:
                        break
                    batch.append(self._jobs.popleft())
                    rows += len(batch[-1].rows)
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._wake.wait(left)
            self.metrics.queue_depth(len(self._jobs))
        return [job for job in batch if job.future.set_running_or_notify_cancel()]

    def _run_batch(self, batch: list[Job]) -> None:
        state = self.loader.state
        model = self.loader.model
        runnable = []
        for job in batch:
            try:
                check_rows(state, job.rows)  # a reload since it was queued may have removed a task
            except CadaptError as exc:
                job.future.set_exception(exc)
                continue
            runnable.append(job)
        if not runnable or model is None:
            return
        rows = [row for job in runnable for row in job.rows]
        started = time.perf_counter()
        try:
            answers = run_rows(model, state, rows, self.config.max_batch, self.config.min_task_confidence)
        except Exception as exc:
            if len(runnable) > 1:  # run each request alone, so that only the one at fault fails
                for job in runnable:
                    self._run_alone(job)
                return
            log.exception("a batch of %d rows failed", len(rows))
            runnable[0].future.set_exception(exc)
            return
        self.metrics.batch(len(rows), len(runnable), time.perf_counter() - started)
        offset = 0
        for job in runnable:
            job.future.set_result(answers[offset : offset + len(job.rows)])
            offset += len(job.rows)

    def _run_alone(self, job: Job) -> None:
        state, model = self.loader.state, self.loader.model
        assert model is not None
        started = time.perf_counter()
        try:
            answers = run_rows(model, state, job.rows, self.config.max_batch, self.config.min_task_confidence)
        except Exception as exc:
            log.exception("a request of %d rows failed", len(job.rows))
            job.future.set_exception(exc)
            return
        self.metrics.batch(len(job.rows), 1, time.perf_counter() - started)
        job.future.set_result(answers)
