"""Commands of a task's lifecycle: versions, promote, alias, restore, gc, and upgrade.

Thin over the registry's Python API (registry/versions.py, registry/retention.py, database.py):
each command resolves what it is given, calls one registry method, and prints its record, as
text or with `--json`. `remove` (retire, or `--purge`) is with the other task commands (tasks.py);
`add-task --new-version` trains a version (stream.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import click

from continual_adapters.cli.main import cli, confirm_or_abort, emit, json_option, open_registry

_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}


class Duration(click.ParamType):
    """A retention period: a number and a unit, s, m, h, d (the default) or w, e.g. 30d or 12h."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value).strip().lower())
        if match is None:
            self.fail(f"{value!r} is not a duration such as 30d, 12h, 90m or 2w", param, ctx)
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _plain(record: Any) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in asdict(record).items()}


@cli.command("versions")
@click.argument("task", required=False)
@json_option
@click.pass_context
def versions_command(ctx, task, as_json):
    """Every stored version of TASK (of every task without one): status, current, aliases, score."""
    rows = open_registry(ctx).versions(task)
    lines = [f"{'task':<24} {'ver':>3}  {'status':<8} {'cur':<3} {'#':>3} {'score':>7} {'bytes':>9}  aliases"]
    for v in rows:
        status = v.status if v.status != "retired" else ("retired" if v.restorable else "purged")
        score = "" if v.score is None else f"{v.score:.4f}"
        lines.append(
            f"{v.task:<24} {v.version:>3}  {status:<8} {'*' if v.current else '':<3} {v.position or '-':>3} "
            f"{score:>7} {v.bundle_bytes or '':>9}  {', '.join(v.aliases)}"
        )
    emit([_plain(v) for v in rows], as_json, "\n".join(lines) if rows else "no tasks yet")


@cli.command("promote")
@click.argument("ref")
@click.option("--by", default=None, help="Who or what promotes, as recorded [user@host].")
@json_option
@click.pass_context
def promote_command(ctx, ref, by, as_json):
    """Make the version REF names (e.g. sst2@2) its task's current one; promoting an older one rolls back."""
    record = open_registry(ctx).promote(ref, by=by)
    when = f"{record.promoted_at:%Y-%m-%d %H:%M:%S} UTC"
    text = f"{record.task}@{record.version} is current (promoted {when} by {record.promoted_by})"
    emit(_plain(record), as_json, text)


@cli.command("alias")
@click.argument("task")
@click.argument("alias")
@click.argument("version", required=False)
@click.option("--remove", "remove_alias", is_flag=True, help="Delete the alias instead of setting it.")
@click.option("--by", default=None, help="Who or what sets it, as recorded [user@host].")
@json_option
@click.pass_context
def alias_command(ctx, task, alias, version, remove_alias, by, as_json):
    """Point TASK@ALIAS at VERSION (a number, `current`, or another alias), or --remove it."""
    registry = open_registry(ctx)
    if remove_alias:
        record = registry.remove_alias(task, alias)
        emit(_plain(record), as_json, f"removed alias {record.task}@{record.alias} (was version {record.version})")
        return
    if version is None:
        raise click.UsageError("name the VERSION the alias points at, or pass --remove")
    record = registry.set_alias(task, alias, version, by=by)
    emit(_plain(record), as_json, f"{record.task}@{record.alias} -> version {record.version} ({record.key})")


@cli.command("restore")
@click.argument("ref")
@json_option
@click.pass_context
def restore_command(ctx, ref, as_json):
    """Serve a retired version again, its files checked byte for byte against their records."""
    record = open_registry(ctx).restore(ref)
    emit(
        {"task": record.family, "key": record.name, "version": record.version, "status": record.status},
        as_json,
        f"restored {record.ref}{'' if record.name == record.ref else f' ({record.name})'}; "
        "`cadapt audit` fills the matrix entries it missed while retired",
    )


@cli.command("gc")
@click.option(
    "--older-than", type=Duration(), required=True, help="Delete retired versions retired at least this long ago (30d)."
)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@json_option
@click.pass_context
def gc_command(ctx, older_than, dry_run, yes, as_json):
    """Delete for good the bundles and artifacts of versions retired longer than --older-than."""
    registry = open_registry(ctx)
    if not dry_run:
        confirm_or_abort(f"Delete for good every version retired more than {older_than} ago?", yes)
    report = registry.gc(older_than, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    text = (
        f"{verb} {len(report.deleted)} retired version(s): {', '.join(report.deleted) or 'none'} "
        f"({len(report.files)} files, {report.bytes_freed:,} bytes); kept within retention: "
        f"{', '.join(report.kept) or 'none'}"
    )
    emit(asdict(report), as_json, text)


@cli.command("upgrade")
@click.option("--no-backup", is_flag=True, help="Skip the copy of a SQLite registry taken before upgrading.")
@json_option
@click.pass_context
def upgrade_command(ctx, no_backup, as_json):
    """Upgrade the registry's schema in place (alembic migrations); a SQLite file is backed up first."""
    report = open_registry(ctx, upgrade=False).upgrade(backup=not no_backup)
    if not report.upgraded:
        text = f"registry is at schema {report.to_version} already: nothing to do"
    else:
        where = report.backup or "none taken (back up a server database yourself)"
        text = f"upgraded registry from schema {report.from_version} to {report.to_version}; backup: {where}"
    emit(asdict(report), as_json, text)
