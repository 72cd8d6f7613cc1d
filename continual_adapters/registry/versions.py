"""Task versions: resolving references (``sst2``, ``sst2@2``, ``sst2@production``), promotion (which
version is current, with its history) and named aliases.

Why this is its own layer of `Registry`: a task retrained on new data is a new row beside the old
one (registry.py's ``begin_task`` with the key ``name@N``), a full member of the stream with its own
position, bundle, probe and evaluations, so every earlier guarantee covers it unchanged. What is
new is only which row a name means. That is decided here, from the promotions log and the alias
table, and nowhere else: serving, the CLI and reports ask `resolve` and get the version's record.

A task never promoted is served at its first version, as before versions existed. Promotion and
alias changes are one short write each, under the writers' lock, so a reader sees the old current
version or the new one, never neither. Neither touches a bundle or a signed field: a rollback is a
promotion of an older version, recorded like any other.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable, Sequence

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from continual_adapters.core.errors import (
    TaskExistsError,
    TaskNotFoundError,
    UnknownVersionError,
    VersionNotReadyError,
    VersionRetiredError,
)
from continual_adapters.core.versions import CURRENT, TaskRef, parse_reference, validate_alias, version_key
from continual_adapters.registry.records import AliasRecord, PromotionRecord, TaskRecord, VersionSummary, to_record
from continual_adapters.registry.schema import AliasRow, BundleRow, EvaluationRow, PromotionRow, TaskRow, utc_now
from continual_adapters.registry.task_artifacts import RegistryArtifacts


def actor(by: str | None = None) -> str:
    """Who a promotion or alias change is recorded as made by: `by` when given (a CI job, a ticket),
    else user@host of this process."""
    if by:
        return by[:255]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry, as in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:255]


def _unusable(row: TaskRow, doing: str) -> VersionNotReadyError | VersionRetiredError | None:
    """Why version `row` cannot be `doing` (served, promoted, aliased), as the typed error; None if it can."""
    if row.status in ("pending", "failed"):
        return VersionNotReadyError(f"cannot {doing} {row.family}@{row.version}: it is {row.status}, not ready")
    if row.status == "retired":
        return VersionRetiredError(
            f"cannot {doing} {row.family}@{row.version}: it is retired (`cadapt restore {row.family}@{row.version}`"
            " brings it back while its files are kept)"
        )
    return None


class RegistryVersions(RegistryArtifacts):
    """The version methods of `Registry`. References are parsed by core/versions.py; stored keys
    (`TaskRecord.name`) are what the other registry methods take."""

    # -- reading ---------------------------------------------------------------------------------

    def _versions_of(self, s: Session, name: str) -> list[TaskRow]:
        rows = list(s.scalars(select(TaskRow).where(TaskRow.family == name).order_by(TaskRow.version)))
        if not rows:
            known = ", ".join(dict.fromkeys(s.scalars(select(TaskRow.family).order_by(TaskRow.family)))) or "none"
            raise TaskNotFoundError(f"unknown task {name!r}; known tasks: {known}")
        return rows

    @staticmethod
    def _current_ids(s: Session, names: Iterable[str] | None = None) -> dict[str, int]:
        """Each task's promoted version (its latest promotion's row id), for `names` or every task."""
        latest = select(PromotionRow.family, func.max(PromotionRow.id).label("last")).group_by(PromotionRow.family)
        if names is not None:
            latest = latest.where(PromotionRow.family.in_(list(names)))
        last = latest.subquery()
        stmt = select(PromotionRow.family, PromotionRow.task_id).join(last, PromotionRow.id == last.c.last)
        return {family: task_id for family, task_id in s.execute(stmt).all()}

    @staticmethod
    def _current_of(rows: list[TaskRow], promoted: int | None) -> TaskRow:
        """The current version among one task's `rows`: the promoted one, else the first that did not fail."""
        return next((r for r in rows if r.id == promoted), next((r for r in rows if r.status != "failed"), rows[0]))

    def _pick(self, s: Session, ref: TaskRef) -> TaskRow:
        rows = self._versions_of(s, ref.name)
        listed = ", ".join(str(r.version) for r in rows)
        if ref.version is not None:
            for row in rows:
                if row.version == ref.version:
                    return row
            raise UnknownVersionError(f"task {ref.name!r} has no version {ref.version} (versions: {listed})")
        if not ref.current:
            alias = s.scalar(select(AliasRow).filter_by(family=ref.name, alias=ref.alias))
            if alias is None:
                known = ", ".join(s.scalars(select(AliasRow.alias).filter_by(family=ref.name).order_by(AliasRow.alias)))
                raise UnknownVersionError(
                    f"task {ref.name!r} has no alias {ref.alias!r} (aliases: {known or 'none'}; versions: {listed})"
                )
            return next(r for r in rows if r.id == alias.task_id)
        return self._current_of(rows, self._current_ids(s, [ref.name]).get(ref.name))

    def resolve(self, ref: str) -> TaskRecord:
        """The stored version a reference names, whatever its status: ``name`` its current version,
        ``name@N`` version N, ``name@alias`` the aliased one. TaskNotFoundError for an unknown task,
        UnknownVersionError for an unknown version or alias."""
        parsed = parse_reference(ref)
        with self._read() as s:
            return to_record(TaskRecord, self._pick(s, parsed))

    def resolve_ready(self, refs: Sequence[str], doing: str = "serve") -> dict[str, TaskRecord]:
        """`resolve` for each of `refs` in one read, refusing any that names a version that cannot be
        served (or `doing`, as the error says): VersionRetiredError or VersionNotReadyError naming it."""
        parsed = {ref: parse_reference(ref) for ref in dict.fromkeys(refs)}
        with self._read() as s:
            rows = {ref: self._pick(s, p) for ref, p in parsed.items()}
            for row in rows.values():
                problem = _unusable(row, doing)
                if problem is not None:
                    raise problem
            return {ref: to_record(TaskRecord, row) for ref, row in rows.items()}

    def current_tasks(self) -> list[TaskRecord]:
        """Each task's current version where it is ready, in stream order: what bare names serve and
        what `--task auto` chooses among (one version per task, so two versions never compete)."""
        with self._read() as s:
            rows = list(s.scalars(select(TaskRow).where(TaskRow.status != "failed")))
            promoted = self._current_ids(s)
        by_task: dict[str, list[TaskRow]] = {}
        for row in sorted(rows, key=lambda r: r.version):
            by_task.setdefault(row.family, []).append(row)
        current = [self._current_of(v, promoted.get(name)) for name, v in by_task.items()]
        ready = [row for row in current if row.status == "ready"]
        return [to_record(TaskRecord, r) for r in sorted(ready, key=lambda r: (r.position or 0, r.name))]

    def versions(self, name: str | None = None) -> list[VersionSummary]:
        """Every stored version of task `name` (of every task when None), failed registrations left
        out: status, whether current, its aliases, whether a retired one can still be restored, its
        registration score and the bytes its bundle keeps. Tasks in stream order, then by version."""
        with self._read() as s:
            where = TaskRow.status != "failed"
            if name is not None:
                where = and_(where, TaskRow.family == parse_reference(name).name)
                self._versions_of(s, parse_reference(name).name)
            rows = s.execute(
                select(TaskRow, BundleRow.size_bytes).outerjoin(BundleRow, BundleRow.task_id == TaskRow.id).where(where)
            ).all()
            ids = [task.id for task, _ in rows]
            scores = s.execute(
                select(EvaluationRow.task_id, EvaluationRow.split, EvaluationRow.metric, EvaluationRow.value).where(
                    EvaluationRow.kind == "registration", EvaluationRow.task_id.in_(ids)
                )
            ).all()
            aliases = s.execute(select(AliasRow.task_id, AliasRow.alias).where(AliasRow.task_id.in_(ids))).all()
            promoted = self._current_ids(s, {task.family for task, _ in rows})
        own: dict[int, dict[str, float]] = {}
        tasks = {task.id: task for task, _ in rows}
        for task_id, split, metric, value in scores:
            if metric == tasks[task_id].primary_metric:
                own.setdefault(task_id, {})[split] = value
        named: dict[int, list[str]] = {}
        for task_id, alias in sorted(aliases, key=lambda a: a[1]):
            named.setdefault(task_id, []).append(alias)
        by_task: dict[str, list[TaskRow]] = {}
        for task, _ in sorted(rows, key=lambda r: r[0].version):
            by_task.setdefault(task.family, []).append(task)
        current = {self._current_of(v, promoted.get(family)).id for family, v in by_task.items()}
        first = {f: min((r.position is None, r.position or 0, r.created_at) for r in v) for f, v in by_task.items()}
        out = []
        for task, size in sorted(rows, key=lambda r: (first[r[0].family], r[0].family, r[0].version)):
            scored = own.get(task.id, {})
            chosen = task.data.get("eval_split") if task.data.get("eval_split") in scored else min(scored, default=None)
            out.append(
                VersionSummary(
                    task=task.family,
                    key=task.name,
                    version=task.version,
                    status=task.status,
                    position=task.position,
                    current=task.id in current,
                    aliases=named.get(task.id, []),
                    created_at=task.created_at,
                    retired_at=task.retired_at,
                    restorable=task.status == "retired" and size is not None,
                    score=None if chosen is None else scored[chosen],
                    bundle_bytes=size,
                )
            )
        return out

    def references(self) -> dict[str, str]:
        """Every reference that names a ready version, to that version's key: ``name@N`` and
        ``name@alias`` for each ready version, and the bare ``name`` (and ``name@current``) for each
        task's current version when it is ready. What a server resolves request task names with, so
        that it answers as `resolve_ready` would without a query per request."""
        out: dict[str, str] = {}
        for v in self.versions():
            if v.status != "ready":
                continue
            refs = [f"{v.task}@{v.version}"] + [f"{v.task}@{alias}" for alias in v.aliases]
            refs += [v.task, f"{v.task}@{CURRENT}"] if v.current else []
            out.update(dict.fromkeys(refs, v.key))
        return out

    def promotions(self, name: str) -> list[PromotionRecord]:
        """Task `name`'s promotions, oldest first: the last one names its current version."""
        family = parse_reference(name).name
        with self._read() as s:
            self._versions_of(s, family)
            rows = s.execute(
                select(PromotionRow, TaskRow.name, TaskRow.version)
                .join(TaskRow, TaskRow.id == PromotionRow.task_id)
                .where(PromotionRow.family == family)
                .order_by(PromotionRow.id)
            ).all()
        return [to_record(PromotionRecord, p, task=family, key=key, version=v) for p, key, v in rows]

    def aliases(self, name: str | None = None) -> list[AliasRecord]:
        """Task `name`'s aliases (every task's when None), by task and alias."""
        with self._read() as s:
            stmt = select(AliasRow, TaskRow.name, TaskRow.version).join(TaskRow, TaskRow.id == AliasRow.task_id)
            if name is not None:
                family = parse_reference(name).name
                self._versions_of(s, family)
                stmt = stmt.where(AliasRow.family == family)
            rows = s.execute(stmt.order_by(AliasRow.family, AliasRow.alias)).all()
        return [to_record(AliasRecord, a, task=a.family, key=key, version=v) for a, key, v in rows]

    def key_for(self, name: str, new_version: bool = False) -> str:
        """The key a task added now as `name` is registered under: `name` itself for a new task, the
        next version's ``name@N`` with `new_version`. TaskExistsError when the name is taken and no
        new version was asked for (the message says how to ask); TaskNotFoundError for a new version
        of a task that does not exist. `begin_task` checks the number again under the write lock."""
        with self._read() as s:
            rows = list(s.scalars(select(TaskRow).where(TaskRow.family == name)))
        held = [r.version for r in rows if r.status != "failed"]
        if new_version:
            if not held:
                raise TaskNotFoundError(f"task {name!r} does not exist: add it without --new-version first")
            return version_key(name, max(held) + 1)
        if rows:
            statuses = ", ".join(f"{r.family}@{r.version} {r.status}" for r in sorted(rows, key=lambda r: r.version))
            raise TaskExistsError(
                f"task {name!r} already exists ({statuses}); --new-version trains its next version beside it"
            )
        return name

    # -- writing ---------------------------------------------------------------------------------

    def promote(self, ref: str, by: str | None = None) -> PromotionRecord:
        """Makes the version `ref` names its task's current one, atomically, recording when and by
        whom (`actor`). Promoting an older version is a rollback. Only a ready version can be
        promoted (VersionNotReadyError, VersionRetiredError otherwise); promoting the version that
        is already current records nothing and returns the promotion that made it so (or, for a
        task never promoted, one dated at its registration, by its registering host)."""
        parsed = parse_reference(ref)
        with self._write() as s:
            row = self._pick(s, parsed)
            problem = _unusable(row, "promote")
            if problem is not None:
                raise problem
            rows = self._versions_of(s, row.family)
            promoted = self._current_ids(s, [row.family]).get(row.family)
            if self._current_of(rows, promoted).id == row.id:
                last = s.scalar(select(PromotionRow).filter_by(family=row.family).order_by(PromotionRow.id.desc()))
                if last is not None:
                    return to_record(PromotionRecord, last, task=row.family, key=row.name, version=row.version)
                return PromotionRecord(row.family, row.name, row.version, row.created_at, row.owner_host or "")
            promotion = PromotionRow(family=row.family, task_id=row.id, promoted_at=utc_now(), promoted_by=actor(by))
            s.add(promotion)
            s.flush()
            return to_record(PromotionRecord, promotion, task=row.family, key=row.name, version=row.version)

    def set_alias(self, name: str, alias: str, version: int | str, by: str | None = None) -> AliasRecord:
        """Points `alias` of task `name` at `version` (a number, or any reference suffix: ``2``,
        ``current``, another alias), creating or moving it. The version must be ready: an alias to
        a retired or unfinished version is refused with the typed error that says which."""
        validate_alias(alias)
        family = parse_reference(name).name
        target = parse_reference(f"{family}@{version}")
        with self._write() as s:
            row = self._pick(s, target)
            problem = _unusable(row, f"point alias {alias!r} at")
            if problem is not None:
                raise problem
            record = s.scalar(select(AliasRow).filter_by(family=family, alias=alias))
            if record is None:
                record = AliasRow(family=family, alias=alias)
                s.add(record)
            record.task_id, record.set_at, record.set_by = row.id, utc_now(), actor(by)
            s.flush()
            return to_record(AliasRecord, record, task=family, key=row.name, version=row.version)

    def remove_alias(self, name: str, alias: str) -> AliasRecord:
        """Deletes alias `alias` of task `name` and returns it as it was; UnknownVersionError if unset."""
        family = parse_reference(name).name
        validate_alias(alias)
        with self._write() as s:
            self._versions_of(s, family)
            found = s.execute(
                select(AliasRow, TaskRow.name, TaskRow.version)
                .join(TaskRow, TaskRow.id == AliasRow.task_id)
                .where(AliasRow.family == family, AliasRow.alias == alias)
            ).first()
            if found is None:
                raise UnknownVersionError(f"task {family!r} has no alias {alias!r}")
            row, key, version = found
            record = to_record(AliasRecord, row, task=family, key=key, version=version)
            s.delete(row)
        return record
