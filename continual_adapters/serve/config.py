"""The server's settings, validated once: every limit a client could push on is bounded here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from continual_adapters.core.errors import ConfigError


@dataclass(frozen=True)
class ServeConfig:
    """`cadapt serve`'s options.

    `max_batch` rows at most go through the encoder at once; requests arriving within
    `max_wait_ms` of the first waiting one are merged into that batch (`batching=False` answers
    each request on its own: the benchmark's baseline). `max_queue` requests may wait; beyond it a
    request is refused with 503 at once. `max_rows` and `max_body_bytes` bound one request (413),
    `timeout_s` how long a request may wait for its answer (504). `poll_s` is how often the registry
    is checked for added, removed or altered tasks (0: only on `POST /v1/reload`).
    `min_task_confidence` (None: off) answers an auto-routed row "no task" below that confidence.
    """

    tasks: tuple[str, ...] | None = None
    max_batch: int = 64
    max_wait_ms: float = 5.0
    batching: bool = True
    max_queue: int = 256
    max_rows: int = 256
    max_body_bytes: int = 1 << 20
    timeout_s: float = 30.0
    poll_s: float = 10.0
    min_task_confidence: float | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_rows < 1 or self.max_body_bytes < 64:
            raise ConfigError("max-batch, max-queue and max-rows must be at least 1, max-body-bytes at least 64")
        for name in ("max_wait_ms", "timeout_s", "poll_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be a finite number >= 0, got {value!r}")
        if self.timeout_s == 0:
            raise ConfigError("timeout-s must be above 0")
        confidence = self.min_task_confidence
        if confidence is not None and not 0 <= confidence <= 1:
            raise ConfigError(f"min-task-confidence must be between 0 and 1, got {confidence!r}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("an empty token would let anyone in: give a real token or none")

    @property
    def merges(self) -> bool:
        """Whether requests are merged across: batching on, and room to merge in rows and time."""
        return self.batching and self.max_batch > 1 and self.max_wait_ms > 0
