"""Pieces of the `cadapt serve` tests: tiny registries, a real uvicorn server on a loopback port in a
thread of the test process, and a plain HTTP client (urllib: what any client sends, nothing of
FastAPI's test client)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cli import cli_ok
from tests.support.reliability import write_tiny_data

#: The tiny stream's tasks and the `--max-length` each is registered with: they differ, so serving
#: at the recorded length is tested, not assumed.
TASKS = {"alpha": 32, "beta": 16, "gamma": 24}
#: add-task's options for the default tiny tasks: adapters of bottleneck 8.
ADAPTERS = ("--adapter-size", "8")


def add_tiny_task(
    url: Path | str,
    name: str,
    encoder: str,
    folder: Path,
    seed: int,
    max_length: int = 32,
    options: Sequence[str] = ADAPTERS,
) -> None:
    """`cadapt add-task` of a tiny two-label task; `options` choose the method (adapters of size 8)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = write_tiny_data(folder, seed=seed)
    cli_ok(
        "--registry",
        url,
        "add-task",
        name,
        "--train",
        files["train"],
        "--validation",
        files["validation"],
        "--test",
        files["test"],
        "--encoder",
        encoder,
        "--epochs",
        "1",
        *options,
        "--max-length",
        str(max_length),
        "--quiet",
    )


def build_registry(root: Path, encoder: str, tasks: dict[str, int] = TASKS, options: Sequence[str] = ADAPTERS) -> Path:
    url = root / "registry.db"
    for seed, (name, max_length) in enumerate(tasks.items()):
        add_tiny_task(url, name, encoder, root / f"data-{name}", seed, max_length, options)
    return url


def copy_registry(url: Path, into: Path) -> Path:
    """A copy of a SQLite registry, its write-ahead log (WAL mode: recent commits may live only
    there) and its artifact folder (bundle paths are relative to it)."""
    into.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = url.with_name(url.name + suffix)
        if source.exists():
            shutil.copy2(source, into / source.name)
    shutil.copytree(url.with_suffix(""), into / url.stem)
    return into / url.name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The stable error code of an error answer."""
        return self.json()["error"]["code"] if self.status >= 400 else None


def request(
    base: str,
    method: str,
    path: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Reply:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(base + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


class RunningServer:
    """`cadapt serve`'s app on uvicorn, on a free loopback port, in a thread of this process."""

    def __init__(self, url: Path | str, **settings: Any):
        import uvicorn

        from continual_adapters.registry import Registry
        from continual_adapters.serve.app import Server, create_app
        from continual_adapters.serve.config import ServeConfig

        self.server = Server(Registry(url), ServeConfig(**{"poll_s": 0.0, **settings}))
        self.report = self.server.start()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(self.server), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(30)
        self.server.stop()

    def call(self, method: str, path: str, body: bytes | dict | None = None, **kwargs: Any) -> Reply:
        return request(self.base, method, path, body, **kwargs)

    def predict(self, inputs: list[dict], **fields: Any) -> Reply:
        return self.call("POST", "/v1/predict", {"inputs": inputs, **fields})
