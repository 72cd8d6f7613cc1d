"""Task files under the artifact root: atomic writes, path safety, integrity checks, ownership.

Each task has its bundle in ``bundles/`` and may have one file per artifact kind in that kind's
folder (schema.ARTIFACT_FOLDERS, e.g. ``probes/``), all named ``<task>-<sha16>.safetensors``.
Split out of the registry so the database logic (registry.py) and the stored side it points at
can be read separately. Nothing here touches the database; callers pass the artifact store
(files/storage.py: a local folder, or a bucket through fsspec), and every check here holds on both.
"""

import os
import re
from datetime import datetime
from typing import Any

from continual_adapters.core.errors import IntegrityError, RegistryError, StorageError
from continual_adapters.files.atomic import TEMP_PREFIX, CrashHook, sha256_bytes
from continual_adapters.files.storage import ArtifactStore
from continual_adapters.files.storage import safe_path as safe_path  # its callers import it from here
from continual_adapters.registry.schema import ARTIFACT_FOLDERS

BUNDLES = "bundles"
# Every folder that holds task files: fsck looks for orphans in each.
TASK_FOLDERS: tuple[str, ...] = (BUNDLES, *ARTIFACT_FOLDERS.values())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(
    owner_host: str | None, owner_pid: int | None, updated_at: datetime, host: str, now: datetime, stale_after: float
) -> bool:
    """A pid means nothing on another host, so there only age can declare a registration abandoned."""
    if owner_host == host and owner_pid is not None:
        return _pid_alive(owner_pid)
    return (now - updated_at).total_seconds() < stale_after


def owned_by(filename: str, name: str) -> bool:
    """Exact pattern, so task "a" never claims the files of task "a-b"."""
    n = re.escape(name)
    return (
        re.fullmatch(rf"{n}-[0-9a-f]{{16}}\.safetensors|{re.escape(TEMP_PREFIX)}{n}-[0-9a-f]{{16}}", filename)
        is not None
    )


def prepare_folder(store: ArtifactStore, folder: str, what: str = "bundle") -> None:
    """Makes a task folder ready for writes. A symlinked one is refused (RegistryError): it would
    carry every write elsewhere."""
    try:
        store.prepare(folder)
    except IntegrityError as err:
        raise RegistryError(str(err)) from err
    except OSError as err:
        raise RegistryError(f"cannot create the {what} folder under {store.url}: {err}") from err


def task_file(folder: str, name: str, sha256: str) -> str:
    """The relative path a task's file gets: content-addressed, so rewriting the same bytes is a no-op."""
    return f"{folder}/{name}-{sha256[:16]}.safetensors"


def write_task_file(
    store: ArtifactStore, folder: str, name: str, data: bytes, crash_point: CrashHook, what: str = "bundle"
) -> tuple[str, str, int]:
    """Writes one of task `name`'s files (its bundle, or its `what` artifact) into `folder` of the
    store, all or nothing (files/storage.py says how on each medium).

    The final name is content-addressed, so if it already exists it holds these very bytes. An
    OSError at any step leaves the folder as it was and becomes a RegistryError naming the step.
    """
    prepare_folder(store, folder, what)
    digest = sha256_bytes(data)
    rel = task_file(folder, name, digest)
    store.check(rel)
    try:
        store.write(rel, data, stem=name, crash_point=crash_point)
    except StorageError as err:
        raise RegistryError(
            f"cannot write the {what} of task {name!r} to {store.location(rel)} ({err.step} failed: {err.reason}); "
            "nothing was recorded"
        ) from err
    return rel, digest, len(data)


def write_bundle_file(store: ArtifactStore, name: str, data: bytes, crash_point: CrashHook) -> tuple[str, str, int]:
    return write_task_file(store, BUNDLES, name, data, crash_point)


def file_problem(store: ArtifactStore, rel: str, sha256: str, size: int) -> tuple[str, str] | None:
    """("missing" | "mismatch", detail), or None when the file is exactly what the row says. A store
    that cannot be reached at all is a RegistryError: that says nothing about the file."""
    try:
        entry = store.stat(rel)
    except IntegrityError as err:
        return "mismatch", str(err)
    except OSError as err:
        raise RegistryError(f"cannot check {store.location(rel)}: {err}") from err
    if entry is None:
        return "missing", "file is missing"
    if entry.problem is not None:
        return "mismatch", entry.problem
    if entry.size != size:
        return "mismatch", f"size is {entry.size} bytes, registry says {size}"
    try:
        actual = store.sha256(rel)
    except (OSError, IntegrityError) as err:
        return "mismatch", f"cannot be read ({err})"
    return None if actual == sha256 else ("mismatch", f"sha256 is {actual}, registry says {sha256}")


def read_checked(store: ArtifactStore, rel: str, sha256: str, size: int, what: str) -> bytes:
    """The bytes of the file at `rel`, only if they are exactly what its row says: RegistryError
    when it is missing, IntegrityError naming the file when it is anything else."""
    store.check(rel)
    where = store.location(rel)
    try:
        with store.open(rel) as (handle, found):
            data = handle.read(size + 1) if found == size else b""
    except FileNotFoundError:
        raise RegistryError(f"{what} file {where} is missing; run `cadapt fsck`") from None
    except IntegrityError as err:
        raise IntegrityError(f"{what} at {err}") from err
    except OSError as err:
        raise IntegrityError(f"{what} at {where} cannot be read ({err})") from err
    found = found if found != size else len(data)
    if found != size:
        raise IntegrityError(f"{what} at {where}: size is {found} bytes, registry says {size}")
    actual = sha256_bytes(data)
    if actual != sha256:
        raise IntegrityError(f"{what} at {where}: sha256 is {actual}, registry says {sha256}")
    return data


def task_entries(store: ArtifactStore) -> list[str]:
    """Every entry of every task folder, as paths relative to the root."""
    found = []
    for folder in TASK_FOLDERS:
        try:
            found += [f"{folder}/{e}" for e in store.listdir(folder)]
        except IntegrityError as err:
            raise RegistryError(str(err)) from err
        except OSError as err:
            raise RegistryError(f"cannot list {store.location(folder)}: {err}") from err
    return sorted(found)


def remove_unreferenced(store: ArtifactStore, name: str, referenced: set[str]) -> None:
    """Deletes the files of task ``name`` (final or temp, in every task folder) that no row points at."""
    for rel in task_entries(store):
        if owned_by(rel.rsplit("/", 1)[1], name) and rel not in referenced:
            remove_entry(store, rel)


def remove_entry(store: ArtifactStore, rel: str) -> None:
    """Deletes a file or a symlink (never its target); a directory someone put among the task files
    is left for a person, since nothing cadapt writes is one. Called after the rows that pointed at
    it are committed: a failure to delete leaves an orphan for fsck, never a row without its file,
    so it is a RegistryError the caller may report, not a reason to undo anything."""
    try:
        store.remove(rel)
    except OSError as err:
        raise RegistryError(f"cannot delete {store.location(rel)} ({err}); `cadapt fsck --repair` will") from err


def list_files(store: ArtifactStore) -> list[dict[str, Any]]:
    """Every file under the root with its sha256; symlinks are listed by target, never followed."""
    return [{"path": rel, "link": link, "sha256": None if link else store.sha256(rel)} for rel, link in store.walk()]
