"""Prometheus text exposition of what the server did, written by hand (no client library to install).

Counters of requests (by route and status), rows (by task), batches; histograms of request latency,
per-task row latency (admission to answer) and batch sizes in rows; gauges of the queue depth and
of the served and refused tasks. Updated from the worker thread and the event loop, hence the lock.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative-bucket histogram, as Prometheus expects it."""

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.buckets) if value <= bound), len(self.buckets))
        self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> Iterable[str]:
        running = 0
        sep = "," if labels else ""
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            yield f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}'
        suffix = f"{{{labels}}}" if labels else ""
        yield f"{name}_sum{suffix} {self.total:.6f}"
        yield f"{name}_count{suffix} {self.count}"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Everything `/metrics` reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)
        self.rejected_rows = 0
        self.batches = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.task_latency: dict[str, Histogram] = {}
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.batch_requests = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.depth = 0
        self.reloads: dict[str, int] = defaultdict(int)
        self.served = 0
        self.refused = 0

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            if route == "/v1/predict":
                self.latency.observe(seconds)

    def answered(self, tasks: Sequence[str | None], seconds: float) -> None:
        """Rows answered to one request, by task (None: auto routing found no task)."""
        with self._lock:
            for task in tasks:
                if task is None:
                    self.rejected_rows += 1
                    continue
                self.rows[task] += 1
                self.task_latency.setdefault(task, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.batch_rows.observe(rows)
            self.batch_requests.observe(requests)
            self.batch_seconds.observe(seconds)

    def queue_depth(self, depth: int) -> None:
        self.depth = depth

    def reloaded(self, outcome: str, served: int, refused: int) -> None:
        with self._lock:
            self.reloads[outcome] += 1
            self.served, self.refused = served, refused

    def render(self) -> str:
        with self._lock:
            out = [
                "# HELP cadapt_requests_total HTTP requests by route and status.",
                "# TYPE cadapt_requests_total counter",
            ]
            out += [
                f'cadapt_requests_total{{route="{_label(r)}",status="{s}"}} {n}'
                for (r, s), n in sorted(self.requests.items())
            ]
            out += ["# HELP cadapt_rows_total Rows answered, by task.", "# TYPE cadapt_rows_total counter"]
            out += [f'cadapt_rows_total{{task="{_label(t)}"}} {n}' for t, n in sorted(self.rows.items())]
            out += [
                "# HELP cadapt_rows_no_task_total Auto-routed rows answered with no task (below the confidence).",
                "# TYPE cadapt_rows_no_task_total counter",
                f"cadapt_rows_no_task_total {self.rejected_rows}",
                "# HELP cadapt_request_seconds Latency of /v1/predict, from arrival to answer.",
                "# TYPE cadapt_request_seconds histogram",
                *self.latency.lines("cadapt_request_seconds"),
                "# HELP cadapt_task_row_seconds Latency of the requests that held each task's rows, per row.",
                "# TYPE cadapt_task_row_seconds histogram",
            ]
            for task, histogram in sorted(self.task_latency.items()):
                out += histogram.lines("cadapt_task_row_seconds", f'task="{_label(task)}"')
            out += [
                "# HELP cadapt_batches_total Encoder batches run.",
                "# TYPE cadapt_batches_total counter",
                f"cadapt_batches_total {self.batches}",
                "# HELP cadapt_batch_rows Rows per merged batch.",
                "# TYPE cadapt_batch_rows histogram",
                *self.batch_rows.lines("cadapt_batch_rows"),
                "# HELP cadapt_batch_requests Requests merged per batch.",
                "# TYPE cadapt_batch_requests histogram",
                *self.batch_requests.lines("cadapt_batch_requests"),
                "# HELP cadapt_batch_seconds Time the model took per batch.",
                "# TYPE cadapt_batch_seconds histogram",
                *self.batch_seconds.lines("cadapt_batch_seconds"),
                "# HELP cadapt_queue_depth Requests waiting for the model.",
                "# TYPE cadapt_queue_depth gauge",
                f"cadapt_queue_depth {self.depth}",
                "# HELP cadapt_tasks_served Tasks served now.",
                "# TYPE cadapt_tasks_served gauge",
                f"cadapt_tasks_served {self.served}",
                "# HELP cadapt_tasks_refused Ready tasks refused (bundle not matching its sha256, unreadable).",
                "# TYPE cadapt_tasks_refused gauge",
                f"cadapt_tasks_refused {self.refused}",
                "# HELP cadapt_reloads_total Registry reloads, by outcome.",
                "# TYPE cadapt_reloads_total counter",
            ]
            out += [f'cadapt_reloads_total{{outcome="{o}"}} {n}' for o, n in sorted(self.reloads.items())]
        return "\n".join(out) + "\n"
