"""Task references: how a person or a client names one stored version of a task.

A task may be trained again (new data, a new label) without touching the version that serves now,
so one name stands for several stored versions. A reference picks one of them:

* ``sst2``: the task's current version, the one `cadapt promote` last made current;
* ``sst2@2``: version 2, whatever is current;
* ``sst2@production``: the version the alias ``production`` points at, for clients that pin.

Parsing lives in core, below everything, because every layer takes task names (the registry
resolves references, serving routes rows by them, the CLI passes them through), and all of them
must read ``@`` the same way. Stored keys (config.version_key) use the same spelling, so a version's
key is also a reference to it: ``sst2@2`` names version 2 either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from continual_adapters.core.config import VERSION_SEPARATOR, validate_task_key, validate_task_name, version_key
from continual_adapters.core.errors import ConfigError

#: The alias every task has without being given it: its current version.
CURRENT = "current"
#: An alias starts with a letter, so it can never be read as a version number.
ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class TaskRef:
    """A parsed reference: the task's name and at most one of a version number or an alias;
    neither means the current version."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}{VERSION_SEPARATOR}{self.version}"
        return self.name if self.alias is None else f"{self.name}{VERSION_SEPARATOR}{self.alias}"

    @property
    def current(self) -> bool:
        return self.version is None and self.alias in (None, CURRENT)


def validate_alias(alias: str) -> str:
    """Alias names: a slug that starts with a letter, and not ``current``, which promotion owns."""
    if not isinstance(alias, str) or not ALIAS.match(alias):
        raise ConfigError(
            f"invalid alias {alias!r}: use 1-64 lower-case letters, digits, '-' or '_', starting with a letter"
        )
    if alias == CURRENT:
        raise ConfigError(f"{CURRENT!r} is not an alias to set: `cadapt promote` decides the current version")
    return alias


def parse_reference(ref: str) -> TaskRef:
    """``name``, ``name@N`` (N >= 1) or ``name@alias``; ConfigError for anything else."""
    if not isinstance(ref, str):
        raise ConfigError(f"a task reference is a string, got {ref!r}")
    name, separator, selector = ref.partition(VERSION_SEPARATOR)
    validate_task_name(name)
    if not separator:
        return TaskRef(name)
    if selector.isascii() and selector.isdigit():
        if selector[0] == "0":
            raise ConfigError(f"invalid task reference {ref!r}: versions are numbered from 1, without leading zeros")
        return TaskRef(name, version=int(selector))
    if selector == CURRENT:
        return TaskRef(name, alias=CURRENT)
    try:
        return TaskRef(name, alias=validate_alias(selector))
    except ConfigError:
        raise ConfigError(
            f"invalid task reference {ref!r}: write NAME, NAME@VERSION or NAME@ALIAS (e.g. sst2@2, sst2@production)"
        ) from None


def split_key(key: str) -> tuple[str, int]:
    """The task name and version number a stored key (config.version_key) stands for."""
    validate_task_key(key)
    name, _, version = key.partition(VERSION_SEPARATOR)
    return name, int(version) if version else 1


__all__ = ["CURRENT", "TaskRef", "parse_reference", "split_key", "validate_alias", "version_key"]
