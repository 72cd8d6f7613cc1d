"""Task registry: which tasks exist, in what stream order, and which bundle file holds each.

The registry is a database (SQLite by default, PostgreSQL for shared setups) because several
training processes may add tasks to one stream at once: a task's position, its bundle row and
its evaluation rows must land together or not at all. Bundle bytes live in files under the
artifact root; rows only point at them by relative path and sha256. Writers are serialised by
one lock (engine.py); the read-side queries live in queries.py.

Adding a task is a three-step protocol, so a crash anywhere leaves only things fsck can find:
``begin_task`` (a ``pending`` row owned by this pid/host) -> ``write_file`` (temp file, fsync,
atomic rename) -> ``finish_task`` (one transaction: position, bundle row, evaluations).
``abort_task`` undoes an unfinished task. A crash leaves at worst a pending row whose owner is
dead and an unreferenced file; ``fsck(repair=True)`` removes both.

Crash injection, for tests of that claim: if the environment variable ``CADAPT_CRASH_AT`` names
one of ``CRASH_POINTS`` the process calls ``os._exit(97)`` on reaching that step (no cleanup, no
flush, like a kill -9). In-process tests may instead set the module attribute ``_fault_hook`` to a
callable; it receives each step name and may raise.

With ``CADAPT_REGISTRY_KEY`` set, every write that changes a task's critical fields re-signs
them (signing.py) in the same transaction, and ``verify_bundle`` and ``fsck`` check the
signatures.
"""

import math
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, inspect, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from continual_adapters.core.config import HEADS, validate_task_name
from continual_adapters.files.atomic import is_sha256
from continual_adapters.registry import signing
from continual_adapters.registry.artifacts import (bundle_entries, bundles_dir, file_problem, owned_by, owner_alive,
                                                   remove_entry, remove_unreferenced, safe_path, write_bundle_file)
from continual_adapters.registry.engine import make_engine, take_write_lock
from continual_adapters.core.errors import ConfigError, IntegrityError, RegistryError, SchemaVersionError, TaskExistsError
from continual_adapters.registry.queries import RegistryQueries, signed_fields
from continual_adapters.registry.records import (BaseModelRecord, BundleDraft, BundleRecord, EvaluationDraft,
                                        EvaluationRecord, FsckReport, TaskRecord, _record)
from continual_adapters.registry.schema import (EVAL_KINDS, MIGRATIONS, SCHEMA_VERSION, _Base, _BaseModel, _Bundle,
                                       _Evaluation, _Meta, _now, _Task)

__all__ = ["SCHEMA_VERSION", "CRASH_POINTS", "BaseModelRecord", "TaskRecord", "BundleDraft", "BundleRecord",
           "EvaluationDraft", "EvaluationRecord", "FsckReport", "Registry", "resolve_url"]

CRASH_POINTS = ("after_begin", "after_tmp_write", "after_fsync", "after_rename", "after_dir_fsync",
                "before_commit", "after_commit")
DEFAULT_STALE_AFTER = 24 * 3600.0

_fault_hook: Callable[[str], None] | None = None


def _crash_point(step: str) -> None:
    if os.environ.get("CADAPT_CRASH_AT") == step:
        os._exit(97)
    if _fault_hook is not None:
        _fault_hook(step)


def _check_sha(value: str, what: str) -> None:
    if not is_sha256(value):
        raise ConfigError(f"{what} must be 64 lowercase hex characters, got {value!r}")


def resolve_url(url: str | os.PathLike | None) -> str:
    """Made absolute so a later chdir cannot silently point the same object at another database."""
    url = os.fspath(url or os.environ.get("CADAPT_REGISTRY") or "registry.db")
    return url if "://" in url else f"sqlite:///{os.path.abspath(os.path.expanduser(url))}"


class Registry(RegistryQueries):
    """One registry database plus its artifact folder; every method is one short transaction."""

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
            self._engine = make_engine(parsed, self._sqlite)
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
        """Unreachable servers, lock timeouts, a full disk or a corrupt file become RegistryError so
        the CLI reports them plainly; constraint violations stay sa IntegrityError for the callers
        that turn a lost race into TaskExistsError."""
        if check and self._db_file is not None and not self._db_file.exists():
            raise self._not_initialised()
        try:
            with Session(self._write_engine if write else self._engine, expire_on_commit=False) as s, s.begin():
                if write:
                    take_write_lock(s)
                if check:
                    self._check_version(self._stored_version(s))
                yield s
        except sa_exc.IntegrityError:
            raise
        except sa_exc.DBAPIError as err:
            raise RegistryError(f"registry {self._shown} cannot be used: {err.orig}") from err

    def _write(self) -> Any:
        return self._session(write=True)

    def _read(self) -> Any:
        return self._session(write=False)

    def _safe_path(self, rel: str) -> Path:
        return safe_path(self.root, rel)

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
            hint = "; run `cadapt init` to migrate it" if self._migratable(stored) else "; use a matching cadapt release"
            raise SchemaVersionError(f"registry at {self._shown} has schema version {stored}, {age} than this code "
                                     f"(version {SCHEMA_VERSION}){hint}")

    @staticmethod
    def _migratable(stored: str) -> bool:
        return stored.isdigit() and int(stored) < SCHEMA_VERSION and all(
            v in MIGRATIONS for v in range(int(stored), SCHEMA_VERSION))

    def initialized(self) -> bool:
        if self._db_file is not None and not self._db_file.exists():
            return False
        with self._session(write=False, check=False) as s:
            return self._stored_version(s) is not None

    def init(self) -> None:
        """Creates or migrates the schema exactly once even when many processes start together: the
        version is read and the DDL run inside one write transaction, under the writers' lock.
        Idempotent, and checks the version before any DDL so an old tool cannot half-migrate."""
        if self._db_file is not None:
            self._db_file.parent.mkdir(parents=True, exist_ok=True)
        with self._session(write=True, check=False) as s:
            stored = self._stored_version(s)
            if stored is None:
                _Base.metadata.create_all(s.connection())
                s.add(_Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            elif stored != str(SCHEMA_VERSION):
                if not self._migratable(stored):
                    self._check_version(stored)
                for version in range(int(stored), SCHEMA_VERSION):
                    for statement in MIGRATIONS[version]:
                        s.execute(text(statement))
                s.get(_Meta, "schema_version").value = str(SCHEMA_VERSION)
        bundles_dir(self.root, create=True)

    def ensure(self) -> "Registry":
        """Creates a missing registry and migrates an older one, so `add-task` needs no separate `init`."""
        if self._db_file is None or self._db_file.exists():
            with self._session(write=False, check=False) as s:
                if self._stored_version(s) == str(SCHEMA_VERSION):
                    return self
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

    # -- adding tasks --------------------------------------------------------------------------

    def begin_task(self, name: str, *, labels: list[str], head: str, method: str = "adapters",
                   primary_metric: str, data: dict[str, Any]) -> TaskRecord:
        validate_task_name(name)
        if head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if not all(isinstance(label, str) for label in labels):
            raise ConfigError(f"labels of task {name!r} must be strings")
        try:
            record = self._begin(name, labels, head, method, primary_metric, data)
        except sa_exc.IntegrityError as err:
            raise TaskExistsError(f"task {name!r} was just created by another process") from err
        _crash_point("after_begin")
        return record

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

    def write_file(self, name: str, data: bytes) -> tuple[str, str, int]:
        """Temp file + fsync + rename: a reader sees either no file or the whole file, never a torn one.
        An OSError (disk full, I/O error) becomes RegistryError after the temp file is removed."""
        validate_task_name(name)
        return write_bundle_file(self.root, name, data, _crash_point)

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

    def _resign(self, s: Session, tasks: list[_Task]) -> None:
        """Re-signs tasks whose signed fields this transaction changed. Without the key, a registry
        that holds signatures is refused rather than left with signatures that no longer match."""
        key = signing.registry_key()
        if key is None:
            if s.scalar(select(func.count()).select_from(_Task).where(_Task.signature.is_not(None))):
                raise RegistryError(f"registry {self._shown} is signed: set {signing.KEY_ENV} to write to it")
            return
        s.flush()
        for task in tasks:
            task.signature = signing.sign(key, signed_fields(s, task))

    def finish_task(self, name: str, bundle: BundleDraft, evaluations: list[EvaluationDraft],
                    proof: dict[str, Any]) -> TaskRecord:
        """Writers hold the registry's write lock, so a position clash can only come from a writer that
        bypasses it; such a clash is retried once."""
        _check_sha(bundle.sha256, "bundle sha256")
        for attempt in range(2):
            try:
                return self._finish(name, bundle, evaluations, proof)
            except sa_exc.IntegrityError as err:
                if attempt == 1:
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
            self._resign(s, [task] + [s.get(_Task, i) for i in sorted(set(ids.values()) - {task.id})])
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
            self._resign(s, [s.get(_Task, i) for i in sorted(set(ids.values()))])
        return [_record(EvaluationRecord, e, after_tasks=after_tasks, created_at=now) for e in evaluations]

    def sign_tasks(self) -> list[str]:
        """Signs every finished task as it stands now: run once after first setting the key on a
        registry that already has tasks. It vouches for the current rows, so check them first."""
        if signing.registry_key() is None:
            raise ConfigError(f"set {signing.KEY_ENV} to sign a registry")
        with self._write() as s:
            tasks = s.scalars(select(_Task).where(_Task.status.in_(("ready", "retired"))).order_by(_Task.name)).all()
            self._resign(s, list(tasks))
            return [t.name for t in tasks]

    # -- checking and removing -----------------------------------------------------------------

    def _signature_problem(self, s: Session, task: _Task, key: bytes) -> str | None:
        if task.signature is None:
            return f"task {task.name!r} is not signed, but {signing.KEY_ENV} is set"
        if not signing.verify(key, signed_fields(s, task), task.signature):
            return (f"task {task.name!r}: its recorded fields do not match their signature "
                    "(edited outside cadapt, or signed with another key)")
        return None

    def verify_bundle(self, name: str) -> BundleRecord:
        """The file against its row, and (with a key) the row against its signature."""
        key = signing.registry_key()
        with self._read() as s:
            task = self._task_row(s, name)
            row = s.scalar(select(_Bundle).where(_Bundle.task_id == task.id))
            if row is None:
                raise RegistryError(f"task {name!r} has no bundle (status {task.status})")
            record = _record(BundleRecord, row, task=name)
            problem = None if key is None else self._signature_problem(s, task, key)
        if problem is not None:
            raise IntegrityError(problem)
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
            self._resign(s, [task])
            s.flush()
            record = _record(TaskRecord, task)
        if rel is not None:
            self._safe_path(rel).unlink(missing_ok=True)
        return record

    def fsck(self, repair: bool = False, *, stale_after: float = DEFAULT_STALE_AFTER) -> FsckReport:
        """Files are listed before rows are read: a file that exists by then already has its pending
        row committed (begin_task precedes write_file), so a live registration is never an orphan."""
        entries = bundle_entries(self.root)
        host, now, key = socket.gethostname(), _now(), signing.registry_key()
        missing: list[str] = []
        mismatched: list[str] = []
        unsigned: list[str] = []
        with self._session(write=repair) as s:
            pending = s.scalars(select(_Task).where(_Task.status == "pending").order_by(_Task.name)).all()
            dead = [t for t in pending
                    if not owner_alive(t.owner_host, t.owner_pid, t.updated_at, host, now, stale_after)]
            live = [t.name for t in pending if t not in dead]
            referenced = set(s.scalars(select(_Bundle.path)))
            ready = s.execute(select(_Task, _Bundle).outerjoin(_Bundle, _Bundle.task_id == _Task.id)
                              .where(_Task.status.in_(("ready", "retired"))).order_by(_Task.name)).all()
            for task, b in ready:
                if key is not None and self._signature_problem(s, task, key) is not None:
                    unsigned.append(task.name)
                if task.status != "ready":
                    continue
                problem = (("missing", "") if b is None
                           else file_problem(self.root, b.path, b.sha256, b.size_bytes))
                if problem is not None:
                    (missing if problem[0] == "missing" else mismatched).append(task.name)
            for t in dead if repair else []:
                s.delete(t)
        orphans = [e for e in entries if e not in referenced
                   and not any(owned_by(e.removeprefix("bundles/"), n) for n in live)]
        for rel in orphans if repair else []:
            remove_entry(self.root, rel)
        return FsckReport(orphans, [t.name for t in dead], missing, mismatched, repaired=repair,
                          signature_mismatches=unsigned)
