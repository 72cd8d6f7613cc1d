"""The HTTP routes of `cadapt serve` (FastAPI), over the batcher, the loaded state and the dashboard.

    POST /v1/predict   rows of any tasks -> one answer per row (protocol.py)
    GET  /v1/tasks     the served tasks (metric, score, parameters, bundle sha256) and the refused ones
    POST /v1/reload    re-read the registry now, hashing every served bundle again
    GET  /healthz      liveness and what is loaded
    GET  /metrics      Prometheus text
    GET  /             the read-only dashboard

Every error is JSON `{"error": {"code", "status", "message"}}` with a code of `ERROR_CODES`, never
a stack trace. With a token every endpoint but /healthz wants `Authorization: Bearer <token>`.
No endpoint writes to the registry. This module imports FastAPI (the optional extra `serve`):
only `cadapt serve` and the tests import it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from continual_adapters.core.errors import CadaptError, RequestTooLargeError
from continual_adapters.registry import Registry
from continual_adapters.serve.batcher import Batcher
from continual_adapters.serve.config import ServeConfig
from continual_adapters.serve.dashboard import Dashboard
from continual_adapters.serve.metrics import Metrics
from continual_adapters.serve.protocol import answer_json, error_body, error_code, parse_reload, parse_request
from continual_adapters.serve.state import ReloadReport, TaskLoader

log = logging.getLogger("cadapt.serve")


class Server:
    """The pieces one serving process holds: loader (model and state), batcher, metrics, dashboard,
    and the thread that polls the registry. `start` loads every task before anything is served."""

    def __init__(self, registry: Registry, config: ServeConfig, encoder: str | None = None, device: str | None = None):
        self.registry, self.config = registry, config
        self.metrics = Metrics()
        self.loader = TaskLoader(registry, config.tasks, encoder, device)
        self.batcher = Batcher(self.loader, config, self.metrics)
        self.dashboard = Dashboard(registry)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="cadapt-serve-poll", daemon=True)
        self.started = False

    def start(self) -> ReloadReport:
        """Loads the model and every task (errors propagate: nothing is served half-configured)."""
        self.batcher.start()
        try:
            report = self.reload(verify=False)
        except BaseException:
            self.batcher.stop()
            raise
        if self.config.poll_s > 0:
            self._poller.start()
        self.started = True
        return report

    def stop(self) -> None:
        self._stop.set()
        self.batcher.stop()

    def reload(self, verify: bool) -> ReloadReport:
        """One reload on the worker thread, waited for; counted in the metrics and logged."""
        try:
            report = self.batcher.reload(verify=verify).result()
        except Exception:
            self.metrics.reloaded("failed", len(self.loader.state.tasks), len(self.loader.state.refused))
            raise
        state = self.loader.state
        self.metrics.reloaded("ok", len(state.tasks), len(state.refused))
        if report.added or report.removed or report.replaced or report.refused:
            log.info(
                "tasks reloaded: +%s -%s replaced %s refused %s (%d served)",
                report.added,
                report.removed,
                report.replaced,
                report.refused,
                report.served,
            )
        return report

    def _poll(self) -> None:
        while not self._stop.wait(self.config.poll_s):
            try:
                self.reload(verify=False)
            except Exception:
                log.exception("polling the registry failed; the tasks served before stay served")


def _error(code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(code, message)
    return JSONResponse(body, status_code=body["error"]["status"], headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` bytes (by its Content-Length, else as read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"the body is {declared} bytes; at most {limit} are taken")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(server: Server) -> FastAPI:
    """The ASGI app over a started (or about to be started) `server`."""
    config = server.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.stop()

    app = FastAPI(title="cadapt serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        path = request.url.path
        if config.token is not None and path != "/healthz":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {config.token}".encode()):
                response: Response = _error(
                    "unauthorized", "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
                )
                server.metrics.request(path, response.status_code, time.perf_counter() - started)
                return response
        try:
            response = await call_next(request)
        except Exception:
            log.exception("%s %s failed", request.method, path)
            response = _error("internal_error", "the server failed on this request; its log has the details")
        known = path if path in ("/", "/healthz", "/metrics", "/v1/tasks", "/v1/predict", "/v1/reload") else "other"
        server.metrics.request(known, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return _error("method_not_allowed", f"{request.method} is not taken by {request.url.path}")
        return _error("not_found", f"no endpoint {request.url.path}")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        state = server.loader.state
        body = {
            "status": "ok" if server.started else "loading",
            "tasks": len(state.tasks),
            "refused": len(state.refused),
            "version": state.version,
            "queue": server.batcher.depth,
        }
        return JSONResponse(body, status_code=200 if server.started else 503)

    @app.get("/v1/tasks")
    async def tasks() -> dict[str, Any]:
        state = server.loader.state
        return {
            "version": state.version,
            "tasks": [t.to_dict() for t in state.tasks.values()],
            "refused": [r.to_dict() for r in state.refused.values()],
        }

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        if not server.started:
            return _error("not_ready", "the tasks are still loading", {"Retry-After": "1"})
        try:
            rows, top_k, with_logits = parse_request(await _read_body(request, config.max_body_bytes), config.max_rows)
            job = server.batcher.submit(rows)
        except CadaptError as exc:
            code = error_code(exc)
            return _error(code, str(exc), {"Retry-After": "1"} if code == "queue_full" else None)
        try:
            answers = await asyncio.wait_for(asyncio.wrap_future(job.future), config.timeout_s)
        except asyncio.TimeoutError:
            return _error("timeout", f"no answer within {config.timeout_s:g} s")
        except CadaptError as exc:
            return _error(error_code(exc), str(exc))
        server.metrics.answered([a.task for a in answers], time.perf_counter() - started)
        return JSONResponse({"predictions": [answer_json(a, top_k, with_logits) for a in answers]})

    @app.post("/v1/reload")
    async def reload(request: Request) -> Response:
        try:
            verify = parse_reload(await _read_body(request, 4096))
        except CadaptError as exc:
            return _error(error_code(exc), str(exc))
        try:
            report = await run_in_threadpool(server.reload, verify)
        except CadaptError as exc:
            return _error("reload_failed", str(exc))
        return JSONResponse(report.to_dict())

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        server.metrics.queue_depth(server.batcher.depth)
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def dashboard() -> HTMLResponse:
        page = await run_in_threadpool(server.dashboard.page, server.loader.state)
        return HTMLResponse(page)

    return app
