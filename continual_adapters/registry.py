"""Task registry: which tasks exist, in what stream order, and which bundle file holds each.

The registry is a database (SQLite by default, PostgreSQL for shared setups) because several
training processes may add tasks to one stream at once: a task's position, its bundle row and
its evaluation rows must land together or not at all. Bundle bytes live in files under the
artifact root; rows only point at them by relative path and sha256.

Adding a task is a three-step protocol, so a crash anywhere leaves only things fsck can find:
``begin_task`` (a ``pending`` row owned by this pid/host) -> ``write_file`` (temp file, fsync,
atomic rename) -> ``finish_task`` (one transaction: position, bundle row, evaluations).
``abort_task`` undoes an unfinished task. A crash leaves at worst a pending row whose owner is
dead and an unreferenced file; ``fsck(repair=True)`` removes both.

Crash injection, for tests of that claim: if the environment variable ``CADAPT_CRASH_AT`` names
one of ``CRASH_POINTS`` the process calls ``os._exit(97)`` on reaching that step (no cleanup, no
flush, like a kill -9). In-process tests may instead set the module attribute ``_fault_hook`` to a
callable; it receives each step name and may raise.
"""

import json
import math
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from continual_adapters.artifacts import (_owned_by, _owner_alive, bundle_entries, bundles_dir, file_problem,
                                          list_files, remove_unreferenced, safe_path, write_bundle)
from continual_adapters.errors import (ConfigError, IntegrityError, RegistryError, SchemaVersionError,
                                       TaskExistsError, TaskNotFoundError)
from continual_adapters.records import (BaseModelRecord, BundleDraft, BundleRecord, EvaluationDraft,
                                        EvaluationRecord, FsckReport, TaskRecord, _record)
from continual_adapters.schema import STATUSES  # noqa: F401  (re-exported: it used to be defined here)
from continual_adapters.schema import EVAL_KINDS, HEADS, _Base, _BaseModel, _Bundle, _Evaluation, _Meta, _now, _Task

__all__ = ["SCHEMA_VERSION", "CRASH_POINTS", "BaseModelRecord", "TaskRecord", "BundleDraft", "BundleRecord",
           "EvaluationDraft", "EvaluationRecord", "FsckReport", "Registry", "resolve_url", "validate_name"]

SCHEMA_VERSION = 1
CRASH_POINTS = ("after_tmp_write", "after_fsync", "after_rename", "before_commit", "after_commit")
DEFAULT_STALE_AFTER = 24 * 3600.0
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

_fault_hook: Callable[[str], None] | None = None


def _crash_point(step: str) -> None:
    if os.environ.get("CADAPT_CRASH_AT") == step:
        os._exit(97)
    if _fault_hook is not None:
        _fault_hook(step)


def validate_name(name: str) -> str:
    """Task names become file names and CLI arguments, so only a safe slug is allowed."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"invalid task name {name!r}: use 1-64 of a-z 0-9 _ -, starting with a letter or digit")
    return name


def _check_sha(value: str, what: str) -> None:
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise ConfigError(f"{what} must be 64 lowercase hex characters, got {value!r}")


def resolve_url(url: str | os.PathLike | None) -> str:
    """Made absolute so a later chdir cannot silently point the same object at another database."""
    url = os.fspath(url or os.environ.get("CADAPT_REGISTRY") or "registry.db")
    return url if "://" in url else f"sqlite:///{os.path.abspath(os.path.expanduser(url))}"


def _make_engine(url: Any, sqlite: bool) -> Engine:
    """SQLAlchemy's documented pysqlite recipe: we emit BEGIN ourselves, IMMEDIATE for writes.

    Taking the write lock at BEGIN (not at the first INSERT) means two writers never both read
    max(position) and then deadlock upgrading; the loser simply waits on busy_timeout.
    """
    if not sqlite:
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("busy_timeout=30000", "journal_mode=WAL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("cadapt_write") else "BEGIN")

    return engine


class Registry:
    """One registry database plus its artifact folder; every method is one short transaction."""

    validate_name = staticmethod(validate_name)

    def __init__(self, url: str | os.PathLike | None = None, artifacts: str | os.PathLike | None = None):
        self.url = resolve_url(url)
        try:
            parsed = make_url(self.url)
        except sa_exc.ArgumentError as err:
            raise RegistryError(f"cannot parse registry URL {self.url!r}: {err}") from err
        self._shown = parsed.render_as_string(hide_password=True)
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self._db_file: Path | None = None
        if self._sqlite and parsed.database not in (None, "", ":memory:"):
            self._db_file = Path(os.path.abspath(parsed.database))
            parsed = parsed.set(database=str(self._db_file))
        self.root = self._artifact_root(artifacts)
        try:
            self._engine = _make_engine(parsed, self._sqlite)
        except (sa_exc.NoSuchModuleError, ImportError) as err:
            raise RegistryError(f"no database driver for {self._shown}: {err}") from err
        self._write_engine = self._engine.execution_options(cadapt_write=True)

    def _artifact_root(self, artifacts: str | os.PathLike | None) -> Path:
        if artifacts is not None:
            return Path(os.path.abspath(artifacts))
        if self._db_file is not None:
            stem = self._db_file.with_suffix("")
            return stem if stem != self._db_file else self._db_file.with_name(self._db_file.name + ".artifacts")
        if os.environ.get("CADAPT_ARTIFACTS"):
            return Path(os.path.abspath(os.environ["CADAPT_ARTIFACTS"]))
        raise RegistryError(f"registry {self._shown} is not a SQLite file, so bundle files need a home: "
                            "pass artifacts= or set CADAPT_ARTIFACTS to a shared folder")

    def __repr__(self) -> str:
        return f"Registry({self._shown!r}, artifacts={str(self.root)!r})"

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    # -- sessions and schema -------------------------------------------------------------------

    @contextmanager
    def _session(self, write: bool, check: bool = True) -> Iterator[Session]:
        """Unreachable servers and lock timeouts become RegistryError so the CLI reports them plainly."""
        if check and self._db_file is not None and not self._db_file.exists():
            raise self._not_initialised()
        try:
            with Session(self._write_engine if write else self._engine, expire_on_commit=False) as s, s.begin():
                if check:
                    self._check_version(self._stored_version(s))
                yield s
        except sa_exc.OperationalError as err:
            raise RegistryError(f"registry {self._shown} cannot be used: {err.orig}") from err

    def _write(self) -> Any:
        return self._session(write=True)

    def _read(self) -> Any:
        return self._session(write=False)

    def _not_initialised(self) -> RegistryError:
        return RegistryError(f"registry not initialised at {self._shown}; run `cadapt init`")

    @staticmethod
    def _stored_version(s: Session) -> str | None:
        if not inspect(s.connection()).has_table(_Meta.__tablename__):
            return None
        row = s.get(_Meta, "schema_version")
        return None if row is None else row.value

    def _check_version(self, stored: str | None) -> None:
        if stored is None:
            raise self._not_initialised()
        if stored != str(SCHEMA_VERSION):
            age = "newer" if stored.isdigit() and int(stored) > SCHEMA_VERSION else "older"
            raise SchemaVersionError(f"registry at {self._shown} has schema version {stored}, {age} than this code "
                                     f"(version {SCHEMA_VERSION}); use a matching cadapt release")

    def initialized(self) -> bool:
        if self._db_file is not None and not self._db_file.exists():
            return False
        with self._session(write=False, check=False) as s:
            return self._stored_version(s) is not None

    def init(self) -> None:
        """Idempotent, and checks the version before any DDL so an old tool cannot half-migrate."""
        if self._db_file is not None:
            self._db_file.parent.mkdir(parents=True, exist_ok=True)
        with self._session(write=True, check=False) as s:
            stored = self._stored_version(s)
            if stored is not None:
                self._check_version(stored)
            _Base.metadata.create_all(s.connection())
            if stored is None:
                s.add(_Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        bundles_dir(self.root, create=True)

    def ensure(self) -> "Registry":
        if not self.initialized():
            self.init()
        return self

    # -- base model ----------------------------------------------------------------------------

    def set_base_model(self, name: str, sha256: str, num_parameters: int, architecture: str, hidden_size: int,
                       num_layers: int, revision: str | None = None) -> BaseModelRecord:
        """Adapters are only meaningful on the exact encoder they were trained on, so one base per registry."""
        _check_sha(sha256, "base model sha256")
        with self._write() as s:
            row = s.scalar(select(_BaseModel))
            if row is None:
                row = _BaseModel(name=name, revision=revision, sha256=sha256, num_parameters=num_parameters,
                                 architecture=architecture, hidden_size=hidden_size, num_layers=num_layers,
                                 created_at=_now())
                s.add(row)
            elif row.sha256 != sha256:
                raise IntegrityError(f"registry was built on base {row.name} (sha256 {row.sha256[:16]}), "
                                     f"this model is {name} (sha256 {sha256[:16]})")
            return _record(BaseModelRecord, row)

    def base_model(self) -> BaseModelRecord | None:
        with self._read() as s:
            row = s.scalar(select(_BaseModel))
            return None if row is None else _record(BaseModelRecord, row)

    # -- adding tasks --------------------------------------------------------------------------

    def begin_task(self, name: str, *, labels: list[str], head: str, method: str = "adapters",
                   primary_metric: str, data: dict[str, Any]) -> TaskRecord:
        validate_name(name)
        if head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if not all(isinstance(label, str) for label in labels):
            raise ConfigError(f"labels of task {name!r} must be strings")
        try:
            return self._begin(name, labels, head, method, primary_metric, data)
        except sa_exc.IntegrityError as err:
            raise TaskExistsError(f"task {name!r} was just created by another process") from err

    def _begin(self, name: str, labels: list[str], head: str, method: str, primary_metric: str,
               data: dict[str, Any]) -> TaskRecord:
        with self._write() as s:
            old = s.scalar(select(_Task).where(_Task.name == name))
            if old is not None and old.status != "failed":
                hint = (f" by pid {old.owner_pid} on {old.owner_host}; if that process died run `cadapt fsck --repair`"
                        if old.status == "pending" else "")
                raise TaskExistsError(f"task {name!r} already exists (status {old.status}){hint}")
            if old is not None:
                s.delete(old)
                s.flush()
            now = _now()
            row = _Task(name=name, position=None, status="pending", labels=list(labels), head=head, method=method,
                        primary_metric=primary_metric, data=dict(data), proof=None, owner_pid=os.getpid(),
                        owner_host=socket.gethostname(), created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            return _record(TaskRecord, row)

    def _safe_path(self, rel: str) -> Path:
        return safe_path(self.root, rel)

    def write_file(self, name: str, data: bytes) -> tuple[str, str, int]:
        """Temp file + fsync + rename: a reader sees either no file or the whole file, never a torn one."""
        validate_name(name)
        return write_bundle(self.root, name, data, _crash_point)

    def _draft_task_ids(self, s: Session, evaluations: list[EvaluationDraft], finishing: str | None) -> dict[str, int]:
        """Evaluations may only describe tasks in the stream (or the one being finished)."""
        keys = [(e.task, e.split, e.metric, e.kind) for e in evaluations]
        if len(set(keys)) != len(keys):
            raise ConfigError("the same (task, split, metric, kind) appears twice in one batch of evaluations")
        for e in evaluations:
            if e.kind not in EVAL_KINDS:
                raise ConfigError(f"evaluation kind must be one of {', '.join(EVAL_KINDS)}, got {e.kind!r}")
            if not math.isfinite(e.value):
                raise ConfigError(f"evaluation of task {e.task!r} has value {e.value}; SQLite would store it as NULL")
        ids = {}
        for name in sorted({e.task for e in evaluations}):
            row = self._task_row(s, name)
            if row.status not in ("ready", "retired") and name != finishing:
                raise RegistryError(f"cannot record evaluations of task {name!r}: it is {row.status}")
            ids[name] = row.id
        return ids

    def finish_task(self, name: str, bundle: BundleDraft, evaluations: list[EvaluationDraft],
                    proof: dict[str, Any]) -> TaskRecord:
        """Non-SQLite engines do not serialise writers, so a position clash is retried once."""
        _check_sha(bundle.sha256, "bundle sha256")
        attempts = 1 if self._sqlite else 2
        for attempt in range(attempts):
            try:
                return self._finish(name, bundle, evaluations, proof)
            except sa_exc.IntegrityError as err:
                if attempt + 1 == attempts:
                    raise RegistryError(f"could not record task {name!r}: {err.orig}") from err
        raise AssertionError("unreachable")

    def _finish(self, name: str, bundle: BundleDraft, evaluations: list[EvaluationDraft],
                proof: dict[str, Any]) -> TaskRecord:
        with self._write() as s:
            task = self._task_row(s, name)
            if task.status != "pending":
                raise RegistryError(f"task {name!r} is {task.status}, not pending; start it with begin_task")
            expected = f"bundles/{name}-{bundle.sha256[:16]}.safetensors"
            if bundle.path != expected:
                raise IntegrityError(f"bundle of task {name!r} is {bundle.path}, not {expected} as write_file names it")
            problem = file_problem(self.root, bundle.path, bundle.sha256, bundle.size_bytes)
            if problem is not None:
                raise IntegrityError(f"bundle of task {name!r} at {bundle.path}: {problem[1]}")
            ids = self._draft_task_ids(s, evaluations, finishing=name)
            now = _now()
            task.position = (s.scalar(select(func.max(_Task.position))) or 0) + 1
            task.status, task.proof, task.updated_at = "ready", proof, now
            s.add(_Bundle(task_id=task.id, created_at=now, **asdict(bundle)))
            for e in evaluations:
                s.add(_Evaluation(task_id=ids[e.task], after_tasks=task.position, split=e.split, metric=e.metric,
                                  value=float(e.value), predictions_sha256=e.predictions_sha256, kind=e.kind,
                                  created_at=now))
            s.flush()
            record = _record(TaskRecord, task)
            _crash_point("before_commit")
        _crash_point("after_commit")
        return record

    def abort_task(self, name: str) -> None:
        """Rows go first, files after: a crash in between leaves an orphan file, never a dangling row."""
        with self._write() as s:
            task = s.scalar(select(_Task).where(_Task.name == name))
            if task is None:
                return
            if task.status not in ("pending", "failed"):
                raise RegistryError(f"task {name!r} is {task.status}; abort_task only undoes unfinished tasks "
                                    "(use remove_task)")
            s.delete(task)
            s.flush()
            referenced = set(s.scalars(select(_Bundle.path)))
        remove_unreferenced(self.root, name, referenced)

    def add_evaluations(self, evaluations: list[EvaluationDraft], after_tasks: int) -> list[EvaluationRecord]:
        """Re-running an audit of the same stream state overwrites it, so the latest check is what is kept."""
        if any(e.kind == "registration" for e in evaluations):
            raise ConfigError("registration evaluations are written by finish_task; use kind audit, reeval or skipped")
        with self._write() as s:
            top = s.scalar(select(func.max(_Task.position))) or 0
            if not 1 <= after_tasks <= top:
                raise ConfigError(f"after_tasks must be between 1 and {top}, got {after_tasks}")
            ids, now = self._draft_task_ids(s, evaluations, finishing=None), _now()
            for e in evaluations:
                row = s.scalar(select(_Evaluation).filter_by(task_id=ids[e.task], after_tasks=after_tasks,
                                                             split=e.split, metric=e.metric, kind=e.kind))
                if row is None:
                    row = _Evaluation(task_id=ids[e.task], after_tasks=after_tasks, split=e.split, metric=e.metric,
                                      kind=e.kind)
                    s.add(row)
                row.value, row.predictions_sha256, row.created_at = float(e.value), e.predictions_sha256, now
        return [_record(EvaluationRecord, e, after_tasks=after_tasks, created_at=now) for e in evaluations]

    # -- reading -------------------------------------------------------------------------------

    def _task_row(self, s: Session, name: str) -> _Task:
        row = s.scalar(select(_Task).where(_Task.name == name))
        if row is None:
            known = ", ".join(s.scalars(select(_Task.name).order_by(_Task.name))) or "none"
            raise TaskNotFoundError(f"unknown task {name!r}; known tasks: {known}")
        return row

    def tasks(self, include_retired: bool = False, include_pending: bool = False) -> list[TaskRecord]:
        """``include_pending`` also shows failed rows: both are tasks that never joined the stream."""
        wanted = {"ready"} | ({"retired"} if include_retired else set()) | (
            {"pending", "failed"} if include_pending else set())
        with self._read() as s:
            rows = s.scalars(select(_Task).where(_Task.status.in_(wanted))).all()
        rows = sorted(rows, key=lambda t: (t.position is None, t.position or 0, t.created_at, t.name))
        return [_record(TaskRecord, r) for r in rows]

    def task(self, name: str) -> TaskRecord:
        with self._read() as s:
            return _record(TaskRecord, self._task_row(s, name))

    def bundle(self, name: str) -> BundleRecord:
        with self._read() as s:
            task = self._task_row(s, name)
            row = s.scalar(select(_Bundle).where(_Bundle.task_id == task.id))
            if row is None:
                raise RegistryError(f"task {name!r} has no bundle (status {task.status})")
            return _record(BundleRecord, row, task=name)

    def bundle_path(self, name: str) -> Path:
        return self._safe_path(self.bundle(name).path)

    def evaluations(self, task: str | None = None, kind: str | None = None) -> list[EvaluationRecord]:
        with self._read() as s:
            if task is not None:
                self._task_row(s, task)
            stmt = select(_Evaluation, _Task.name, _Task.position).join(_Task, _Task.id == _Evaluation.task_id)
            stmt = stmt.where(_Task.name == task) if task is not None else stmt
            rows = s.execute(stmt.where(_Evaluation.kind == kind) if kind is not None else stmt).all()
        rows = sorted(rows, key=lambda r: (r[0].after_tasks, r[2] is None, r[2] or 0, r[0].metric, r[0].split,
                                           r[0].kind, r[1]))
        return [_record(EvaluationRecord, ev, task=name) for ev, name, _ in rows]

    def accuracy_matrix(self, metric: str | None = None,
                        split: str | None = None) -> tuple[list[str], list[list[float | None]]]:
        """R[i][j]: task j after the (i+1)-th task joined. Without ``split`` each task is read on the split
        it was evaluated on: ``data["eval_split"]``, else that of its own registration evaluation."""
        with self._read() as s:
            tasks = s.scalars(select(_Task).where(_Task.position.is_not(None), _Task.status.in_(("ready", "retired")))
                              .order_by(_Task.position)).all()
            evals = s.scalars(select(_Evaluation).where(_Evaluation.kind.in_(("registration", "reeval")))).all()
        column = {t.id: j for j, t in enumerate(tasks)}
        metrics = [metric or t.primary_metric for t in tasks]
        splits = [split] * len(tasks)
        for j, t in enumerate(tasks):
            own = {e.split for e in evals if e.task_id == t.id and e.after_tasks == t.position
                   and e.kind == "registration" and e.metric == metrics[j]}
            splits[j] = split or t.data.get("eval_split") or min(own, default=None)
        n = len(tasks)
        matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
        for e in sorted(evals, key=lambda e: e.kind != "registration"):
            j = column.get(e.task_id)
            if j is None or not 1 <= e.after_tasks <= n or (e.metric, e.split) != (metrics[j], splits[j]):
                continue
            if matrix[e.after_tasks - 1][j] is None:
                matrix[e.after_tasks - 1][j] = e.value
        return [t.name for t in tasks], matrix

    # -- checking and removing -----------------------------------------------------------------

    def verify_bundle(self, name: str) -> BundleRecord:
        record = self.bundle(name)
        problem = file_problem(self.root, record.path, record.sha256, record.size_bytes)
        if problem is not None:
            raise IntegrityError(f"bundle of task {name!r} at {self.root / record.path}: {problem[1]}")
        return record

    def remove_task(self, name: str) -> TaskRecord:
        """Retired, not deleted: its evaluations are history the accuracy matrix still needs."""
        with self._write() as s:
            task = self._task_row(s, name)
            if task.status != "ready":
                raise RegistryError(f"task {name!r} is {task.status}; only ready tasks can be removed")
            bundle = s.scalar(select(_Bundle).where(_Bundle.task_id == task.id))
            rel = None if bundle is None else bundle.path
            if bundle is not None:
                s.delete(bundle)
            task.status, task.updated_at = "retired", _now()
            s.flush()
            record = _record(TaskRecord, task)
        if rel is not None:
            self._safe_path(rel).unlink(missing_ok=True)
        return record


    def fsck(self, repair: bool = False, *, stale_after: float = DEFAULT_STALE_AFTER) -> FsckReport:
        """Files are listed before rows are read: a file that exists by then already has its pending
        row committed (begin_task precedes write_file), so a live registration is never an orphan."""
        entries = bundle_entries(self.root)
        host, now = socket.gethostname(), _now()
        missing: list[str] = []
        mismatched: list[str] = []
        with self._session(write=repair) as s:
            pending = s.scalars(select(_Task).where(_Task.status == "pending").order_by(_Task.name)).all()
            dead = [t for t in pending if not _owner_alive(t, host, now, stale_after)]
            live = [t.name for t in pending if t not in dead]
            referenced = set(s.scalars(select(_Bundle.path)))
            ready = s.execute(select(_Task.name, _Bundle).outerjoin(_Bundle, _Bundle.task_id == _Task.id)
                              .where(_Task.status == "ready").order_by(_Task.name)).all()
            for name, b in ready:
                problem = (("missing", "") if b is None
                           else file_problem(self.root, b.path, b.sha256, b.size_bytes))
                if problem is not None:
                    (missing if problem[0] == "missing" else mismatched).append(name)
            for t in dead if repair else []:
                s.delete(t)
        orphans = [e for e in entries if e not in referenced
                   and not any(_owned_by(e.removeprefix("bundles/"), n) for n in live)]
        for rel in orphans if repair else []:
            (self.root / rel).unlink(missing_ok=True)
        return FsckReport(orphans, [t.name for t in dead], missing, mismatched, repaired=repair)

    def dump(self) -> dict[str, Any]:
        """Surrogate ids are left out so two registries with the same content dump the same."""
        with self._read() as s:
            names = dict(s.execute(select(_Task.id, _Task.name)).all())
            content = {
                "meta": {m.key: m.value for m in s.scalars(select(_Meta))},
                "base_models": [asdict(_record(BaseModelRecord, b)) for b in s.scalars(select(_BaseModel))],
                "tasks": [asdict(_record(TaskRecord, t)) for t in s.scalars(select(_Task).order_by(_Task.name))],
                "bundles": sorted((asdict(_record(BundleRecord, b, task=names[b.task_id]))
                                   for b in s.scalars(select(_Bundle))), key=lambda b: b["task"]),
                "evaluations": sorted((asdict(_record(EvaluationRecord, e, task=names[e.task_id]))
                                       for e in s.scalars(select(_Evaluation))),
                                      key=lambda e: (e["task"], e["after_tasks"], e["split"], e["metric"], e["kind"])),
            }
        content["files"] = list_files(self.root)
        return json.loads(json.dumps(content, sort_keys=True, default=datetime.isoformat))
