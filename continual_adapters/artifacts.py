"""Bundle files under the artifact root: atomic writes, path safety, integrity checks, ownership.

Split out of the registry so the database logic (registry.py) and the on-disk side it points at
can be read separately. Nothing here touches the database; callers pass the artifact root.
"""

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


def write_bundle(root: Path, name: str, data: bytes, crash_point: Callable[[str], None]) -> tuple[str, str, int]:
    """Temp file + fsync + rename: a reader sees either no file or the whole file, never a torn one."""
    bundles = bundles_dir(root, create=True)
    digest = hashlib.sha256(data).hexdigest()
    rel = f"bundles/{name}-{digest[:16]}.safetensors"
    final = safe_path(root, rel)
    tmp = bundles / f".tmp-{name}-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            crash_point("after_tmp_write")
            fh.flush()
            os.fsync(fh.fileno())
        crash_point("after_fsync")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    crash_point("after_rename")
    _fsync_dir(bundles)
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
    actual = _sha256_file(path)
    return None if actual == sha256 else ("mismatch", f"sha256 is {actual}, registry says {sha256}")


def bundle_entries(root: Path) -> list[str]:
    bundles = bundles_dir(root)
    return sorted(f"bundles/{e}" for e in os.listdir(bundles)) if bundles.is_dir() else []


def remove_unreferenced(root: Path, name: str, referenced: set[str]) -> None:
    """Deletes the files of task ``name`` (final or temp) that no bundle row points at."""
    bundles = bundles_dir(root)
    for entry in sorted(os.listdir(bundles)) if bundles.is_dir() else []:
        if _owned_by(entry, name) and f"bundles/{entry}" not in referenced:
            (bundles / entry).unlink(missing_ok=True)


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
