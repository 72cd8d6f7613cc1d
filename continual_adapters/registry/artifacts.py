"""Task files under the artifact root: atomic writes, path safety, integrity checks, ownership.

Each task has its bundle in ``bundles/`` and may have one file per artifact kind in that kind's
folder (schema.ARTIFACT_FOLDERS, e.g. ``probes/``), all named ``<task>-<sha16>.safetensors``.
Split out of the registry so the database logic (registry.py) and the on-disk side it points at
can be read separately. Nothing here touches the database; callers pass the artifact root.
"""

import os
import re
import stat
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from continual_adapters.core.errors import IntegrityError, RegistryError, StorageError
from continual_adapters.files.atomic import TEMP_PREFIX, CrashHook, atomic_write, sha256_bytes, sha256_file
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


def task_dir(root: Path, folder: str, create: bool = False) -> Path:
    path = root / folder
    if path.is_symlink():
        raise RegistryError(f"{path} is a symlink; refusing to read or write task files through it")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def bundles_dir(root: Path, create: bool = False) -> Path:
    return task_dir(root, BUNDLES, create)


def task_file(folder: str, name: str, sha256: str) -> str:
    """The relative path a task's file gets: content-addressed, so rewriting the same bytes is a no-op."""
    return f"{folder}/{name}-{sha256[:16]}.safetensors"


def safe_path(root: Path, rel: str) -> Path:
    """Rows are data and could be edited by hand: never let one point outside the root."""
    parts = PurePosixPath(rel).parts
    full = root.joinpath(*parts)
    bad = not parts or PurePosixPath(rel).is_absolute() or ".." in parts
    if (
        bad
        or any(p.is_symlink() for p in list(full.parents)[: len(parts) - 1])
        or not full.parent.resolve().is_relative_to(root.resolve())
    ):
        raise IntegrityError(f"path {rel!r} leaves the artifact root {root} or passes a symlink")
    return full


def write_task_file(
    root: Path, folder: str, name: str, data: bytes, crash_point: CrashHook, what: str = "bundle"
) -> tuple[str, str, int]:
    """Writes one of task `name`'s files (its bundle, or its `what` artifact) into `folder` under the
    root (files.atomic: all or nothing).

    The final name is content-addressed, so if it already exists it holds these very bytes. An
    OSError at any step leaves the folder as it was and becomes a RegistryError naming the step.
    """
    try:
        task_dir(root, folder, create=True)
    except OSError as err:
        raise RegistryError(f"cannot create the {what} folder under {root}: {err}") from err
    digest = sha256_bytes(data)
    rel = task_file(folder, name, digest)
    final = safe_path(root, rel)
    try:
        atomic_write(final, data, stem=name, crash_point=crash_point)
    except StorageError as err:
        raise RegistryError(
            f"cannot write the {what} of task {name!r} to {final} ({err.step} failed: {err.reason}); "
            "nothing was recorded"
        ) from err
    return rel, digest, len(data)


def write_bundle_file(root: Path, name: str, data: bytes, crash_point: CrashHook) -> tuple[str, str, int]:
    return write_task_file(root, BUNDLES, name, data, crash_point)


def file_problem(root: Path, rel: str, sha256: str, size: int) -> tuple[str, str] | None:
    """("missing" | "mismatch", detail), or None when the file is exactly what the row says."""
    try:
        path = safe_path(root, rel)
        st = os.lstat(path)
    except IntegrityError as err:
        return "mismatch", str(err)
    except FileNotFoundError:
        return "missing", "file is missing"
    if not stat.S_ISREG(st.st_mode):
        return "mismatch", "is a symlink" if stat.S_ISLNK(st.st_mode) else "is not a regular file"
    if st.st_size != size:
        return "mismatch", f"size is {st.st_size} bytes, registry says {size}"
    try:
        actual = sha256_file(path, follow_symlinks=False)
    except OSError as err:
        return "mismatch", f"cannot be read ({err})"
    return None if actual == sha256 else ("mismatch", f"sha256 is {actual}, registry says {sha256}")


def read_checked(root: Path, rel: str, sha256: str, size: int, what: str) -> bytes:
    """The bytes of the file at `rel`, only if they are exactly what its row says: RegistryError
    when it is missing, IntegrityError naming the file when it is anything else."""
    path = safe_path(root, rel)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise RegistryError(f"{what} file {path} is missing; run `cadapt fsck`") from None
    except OSError as err:
        raise IntegrityError(f"{what} at {path} cannot be read ({err}); is it a symlink?") from err
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"{what} at {path} is not a regular file")
        data = handle.read(size + 1) if st.st_size == size else b""
    found = st.st_size if st.st_size != size else len(data)
    if found != size:
        raise IntegrityError(f"{what} at {path}: size is {found} bytes, registry says {size}")
    actual = sha256_bytes(data)
    if actual != sha256:
        raise IntegrityError(f"{what} at {path}: sha256 is {actual}, registry says {sha256}")
    return data


def task_entries(root: Path) -> list[str]:
    """Every entry of every task folder, as paths relative to the root."""
    found = []
    for folder in TASK_FOLDERS:
        path = task_dir(root, folder)
        found += [f"{folder}/{e}" for e in os.listdir(path)] if path.is_dir() else []
    return sorted(found)


def remove_unreferenced(root: Path, name: str, referenced: set[str]) -> None:
    """Deletes the files of task ``name`` (final or temp, in every task folder) that no row points at."""
    for rel in task_entries(root):
        if owned_by(rel.rsplit("/", 1)[1], name) and rel not in referenced:
            remove_entry(root, rel)


def remove_entry(root: Path, rel: str) -> None:
    """Unlinks a file or a symlink (never its target); a directory someone put among the task files
    is left for a person, since nothing cadapt writes is one."""
    path = root / rel
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def list_files(root: Path) -> list[dict[str, Any]]:
    """Every file under the root with its sha256; symlinks are listed by target, never followed."""
    files = []
    for folder, dirs, filenames in os.walk(root) if root.is_dir() else []:
        dirs.sort()
        for fname in filenames:
            path = Path(folder, fname)
            rel = path.relative_to(root).as_posix()
            link = os.readlink(path) if path.is_symlink() else None
            files.append(
                {"path": rel, "link": link, "sha256": None if link else sha256_file(path, follow_symlinks=False)}
            )
    return sorted(files, key=lambda f: f["path"])
