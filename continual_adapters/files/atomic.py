"""Files written all or nothing, and their sha256: the one home of both.

Every file cadapt writes (registry bundles, saved tasks, archives, AdapterHub folders, task-id
centroids) goes through `atomic_write`: a temporary name in the same folder, every byte written,
fsync, rename over the final name, fsync the folder. A reader, or a crash at any instant, sees
either no file or the whole file, never a torn one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from continual_adapters.core.errors import StorageError

CHUNK_BYTES = 1 << 20
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TEMP_PREFIX = ".tmp-"

CrashHook = Callable[[str], None]


def is_sha256(value: Any) -> bool:
    """A sha256 as cadapt records it: 64 lower-case hex characters."""
    return isinstance(value, str) and SHA256_HEX.match(value) is not None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> str:
    """`follow_symlinks=False` (O_NOFOLLOW) for files in cadapt's own folders, where a symlink swapped
    in after a check must be refused rather than hashed; data files a user names may be links."""
    flags = os.O_RDONLY | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, flags), "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of the file at `path` itself, not following a link; None when it
    cannot be read. A cheap sign that a file changed, without reading it."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """A rename is only durable once the directory entry itself reaches the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, some filesystems); only a full write counts."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def temp_name(stem: str) -> str:
    """The temporary name a write of `stem` uses; fsck recognises files of unfinished writes by it."""
    return f"{TEMP_PREFIX}{stem}-{secrets.token_hex(8)}"


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, stem: str | None = None, crash_point: CrashHook | None = None
) -> Path:
    """Writes `data` to `path` all or nothing; returns the path.

    `stem` names the temporary file (default: the final file's name); `crash_point` is called with
    each step's name once it is done (crash-injection tests). An OSError at any step removes the
    temporary file, and the final name too if this write created it, and becomes a StorageError
    naming the step.
    """
    final = Path(path)
    hook = crash_point or (lambda step: None)
    existed = os.path.lexists(final)
    tmp = final.parent / temp_name(stem or final.name)
    step = "create"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            step = "write"
            write_all(fd, data)
            hook("after_tmp_write")
            step = "fsync"
            os.fsync(fd)
        finally:
            os.close(fd)
        hook("after_fsync")
        step = "rename"
        os.replace(tmp, final)
        hook("after_rename")
        step = "directory fsync"
        fsync_dir(final.parent)
        hook("after_dir_fsync")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if step in ("rename", "directory fsync") and not existed:
            final.unlink(missing_ok=True)
        raise StorageError(str(final), step, str(err)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
