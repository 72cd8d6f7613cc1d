"""Bundle files under the artifact root: atomic writes, path safety, integrity checks, ownership.

Split out of the registry so the database logic (registry.py) and the on-disk side it points at
can be read separately. Nothing here touches the database; callers pass the artifact root.
"""

import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from continual_adapters.errors import IntegrityError, RegistryError
from continual_adapters.schema import _Task


def _sha256_file(path: Path) -> str:
    """O_NOFOLLOW so a symlink swapped in after our lstat is refused rather than hashed."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    """A rename is only durable once the directory entry itself reaches the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(task: _Task, host: str, now: datetime, stale_after: float) -> bool:
    """A pid means nothing on another host, so there only age can declare a registration abandoned."""
    if task.owner_host == host and task.owner_pid is not None:
        return _pid_alive(task.owner_pid)
    return (now - task.updated_at).total_seconds() < stale_after


def _owned_by(filename: str, name: str) -> bool:
    """Exact pattern, so task "a" never claims the files of task "a-b"."""
    n = re.escape(name)
    return re.fullmatch(rf"{n}-[0-9a-f]{{16}}\.safetensors|\.tmp-{n}-[0-9a-f]{{16}}", filename) is not None

def bundles_dir(root: Path, create: bool = False) -> Path:
    bundles = root / "bundles"
    if bundles.is_symlink():
        raise RegistryError(f"{bundles} is a symlink; refusing to read or write bundles through it")
    if create:
        bundles.mkdir(parents=True, exist_ok=True)
    return bundles


def safe_path(root: Path, rel: str) -> Path:
    """Rows are data and could be edited by hand: never let one point outside the root."""
    parts = PurePosixPath(rel).parts
    full = root.joinpath(*parts)
    bad = not parts or PurePosixPath(rel).is_absolute() or ".." in parts
    if bad or any(p.is_symlink() for p in list(full.parents)[:len(parts) - 1]) \
            or not full.parent.resolve().is_relative_to(root.resolve()):
        raise IntegrityError(f"bundle path {rel!r} leaves the artifact root {root} or passes a symlink")
    return full


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, some filesystems); only a full write counts."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def write_bundle(root: Path, name: str, data: bytes, crash_point: Callable[[str], None]) -> tuple[str, str, int]:
    """Temp file + fsync + rename: a reader sees either no file or the whole file, never a torn one.

    An OSError at any step (ENOSPC, EIO, a read-only disk) removes the temp file and becomes a
    RegistryError naming the step and the path; after a failed rename or directory fsync the
    final name is removed too, so a failed write leaves the folder as it was. The final name is
    content-addressed, so if it already exists it holds these very bytes.
    """
    try:
        bundles = bundles_dir(root, create=True)
    except OSError as err:
        raise RegistryError(f"cannot create the bundle folder under {root}: {err}") from err
    digest = hashlib.sha256(data).hexdigest()
    rel = f"bundles/{name}-{digest[:16]}.safetensors"
    final = safe_path(root, rel)
    tmp = bundles / f".tmp-{name}-{secrets.token_hex(8)}"
    existed = os.path.lexists(final)
    step = "create"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            step = "write"
            _write_all(fd, data)
            crash_point("after_tmp_write")
            step = "fsync"
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("after_fsync")
        step = "rename"
        os.replace(tmp, final)
        crash_point("after_rename")
        step = "directory fsync"
        _fsync_dir(bundles)
        crash_point("after_dir_fsync")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if step in ("rename", "directory fsync") and not existed:
            final.unlink(missing_ok=True)
        raise RegistryError(f"cannot write the bundle of task {name!r} to {final} ({step} failed: {err}); "
                            "nothing was recorded") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rel, digest, len(data)


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
        actual = _sha256_file(path)
    except OSError as err:
        return "mismatch", f"cannot be read ({err})"
    return None if actual == sha256 else ("mismatch", f"sha256 is {actual}, registry says {sha256}")


def bundle_entries(root: Path) -> list[str]:
    bundles = bundles_dir(root)
    return sorted(f"bundles/{e}" for e in os.listdir(bundles)) if bundles.is_dir() else []


def remove_unreferenced(root: Path, name: str, referenced: set[str]) -> None:
    """Deletes the files of task ``name`` (final or temp) that no bundle row points at."""
    bundles = bundles_dir(root)
    for entry in sorted(os.listdir(bundles)) if bundles.is_dir() else []:
        if _owned_by(entry, name) and f"bundles/{entry}" not in referenced:
            remove_entry(root, f"bundles/{entry}")


def remove_entry(root: Path, rel: str) -> None:
    """Unlinks a file or a symlink (never its target); a directory someone put among the bundles
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
            files.append({"path": rel, "link": link, "sha256": None if link else _sha256_file(path)})
    return sorted(files, key=lambda f: f["path"])
