"""Where a registry's task files live: a local folder or any fsspec file system, behind one interface.

The registry states its file guarantees once (registry/artifacts.py) against `ArtifactStore`: a file
appears under its final name only when complete, every read is checked against the size and sha256
its row records, fsck can list every entry of a task folder (debris of unfinished writes included),
and a removed task's files are deleted. Each implementation keeps them on its own medium:

- `LocalStore` (a path, or a ``file://`` URL): files.atomic's temporary file, fsync, rename and
  folder fsync; symlinks are never followed, so a link planted among the task files can redirect
  neither a read nor a write.
- `FsspecStore` (any other URL: ``s3://bucket/prefix``, ``gs://``, ``az://``; files/remote.py):
  upload under a temporary name, check the size and sha256 of what the server then holds, move it to
  the final name and check again. Object stores have no rename; fsspec's move is a server-side copy
  and a delete, and a copy makes the final object appear whole or not at all.

Paths are relative and '/'-separated, as registry rows record them. Rows are data and could be edited
by hand, so every implementation refuses a path that is absolute, empty or climbs with '..'.
"""

from __future__ import annotations

import hashlib
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Protocol

from continual_adapters.core.errors import ConfigError, IntegrityError
from continual_adapters.files.atomic import CHUNK_BYTES, CrashHook, atomic_write, sha256_file

FILE_SCHEME = "file://"


class Readable(Protocol):
    """What a store hands a reader: bytes on demand, never more than asked for."""

    def read(self, size: int = -1, /) -> bytes: ...


class Entry(NamedTuple):
    """An existing entry: its size, and why it is not a plain file (None when it is one)."""

    size: int
    problem: str | None


class ArtifactStore(ABC):
    """The operations the registry needs on its artifact root. Failures of the medium are OSError
    (FileNotFoundError for an absent entry), as the local file system raises them; a path that
    leaves the root, or an entry that must not be followed, is IntegrityError."""

    url: str

    def location(self, rel: str) -> str:
        """Where `rel` is, for messages: a path for a local store, a URL otherwise."""
        return f"{self.url}/{rel}"

    @abstractmethod
    def check(self, rel: str) -> None:
        """IntegrityError when `rel` could name anything but an entry under the root."""

    def local_path(self, rel: str) -> Path | None:
        """The checked local path of `rel`, or None when the store is not a local folder, so that
        code with a faster or stricter local route (bundle loading) can take it."""
        return None

    @property
    def local_root(self) -> Path | None:
        return None

    @abstractmethod
    def prepare(self, folder: str) -> None:
        """Makes `folder` ready to receive files; OSError when it cannot be."""

    @abstractmethod
    def write(self, rel: str, data: bytes, *, stem: str, crash_point: CrashHook | None = None) -> None:
        """Writes `data` to `rel` all or nothing, through a temporary name beginning with
        files.atomic's TEMP_PREFIX and `stem`; StorageError naming the step that failed, after
        removing what the write had left. `crash_point` is called after each step, with the names
        files.atomic uses (after_tmp_write, after_fsync, after_rename, after_dir_fsync)."""

    @abstractmethod
    def stat(self, rel: str) -> Entry | None:
        """The entry at `rel`, not followed if it is a link; None when there is none."""

    @abstractmethod
    def open(self, rel: str) -> AbstractContextManager[tuple[Readable, int]]:
        """The plain file at `rel` opened for reading, with its size. FileNotFoundError when absent,
        IntegrityError when it is a link, a folder or anything else that is not a plain file."""

    @abstractmethod
    def listdir(self, folder: str) -> list[str]:
        """The names of every entry of `folder`, files of unfinished writes included; [] when the
        folder does not exist."""

    @abstractmethod
    def remove(self, rel: str) -> None:
        """Deletes the entry at `rel` (a link itself, never its target); an absent one is fine, and a
        folder is left for a person, since nothing the registry writes is one."""

    @abstractmethod
    def walk(self) -> list[tuple[str, str | None]]:
        """(path, link target or None) of every file under the root, sorted."""

    def sha256(self, rel: str) -> str:
        digest = hashlib.sha256()
        with self.open(rel) as (handle, _):
            for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(block)
        return digest.hexdigest()


def relative_parts(rel: str, root: object) -> tuple[str, ...]:
    """The parts of a row's path, refused (IntegrityError) when it could name anything but a file
    under the root: absolute, empty, '.', or with a '..' anywhere."""
    path = PurePosixPath(rel)
    if not path.parts or path.is_absolute() or ".." in path.parts:
        raise IntegrityError(f"path {rel!r} leaves the artifact root {root} or passes a symlink")
    return path.parts


def safe_path(root: Path, rel: str) -> Path:
    """Rows are data and could be edited by hand: never let one point outside the root, nor through
    a symlinked folder on the way."""
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


class LocalStore(ArtifactStore):
    """A folder on this machine: what the registry has always used."""

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)

    @property
    def local_root(self) -> Path:
        return self.root

    def location(self, rel: str) -> str:
        return str(self.root.joinpath(*PurePosixPath(rel).parts))

    def local_path(self, rel: str) -> Path:
        return safe_path(self.root, rel)

    def check(self, rel: str) -> None:
        safe_path(self.root, rel)

    def folder(self, folder: str) -> Path:
        """A task folder, refused when it is a symlink: it would carry every read and write elsewhere."""
        path = self.root / folder
        if path.is_symlink():
            raise IntegrityError(f"{path} is a symlink; refusing to read or write task files through it")
        return path

    def prepare(self, folder: str) -> None:
        self.folder(folder).mkdir(parents=True, exist_ok=True)

    def write(self, rel: str, data: bytes, *, stem: str, crash_point: CrashHook | None = None) -> None:
        atomic_write(safe_path(self.root, rel), data, stem=stem, crash_point=crash_point)

    def stat(self, rel: str) -> Entry | None:
        try:
            st = os.lstat(safe_path(self.root, rel))
        except FileNotFoundError:
            return None
        if stat.S_ISREG(st.st_mode):
            return Entry(st.st_size, None)
        return Entry(st.st_size, "is a symlink" if stat.S_ISLNK(st.st_mode) else "is not a regular file")

    @contextmanager
    def _open(self, rel: str) -> Iterator[tuple[Readable, int]]:
        """O_NOFOLLOW, and O_NONBLOCK so that a FIFO named like a task file cannot block the reader;
        then fstat on the open descriptor, so nothing swapped in after a check is read."""
        path = safe_path(self.root, rel)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise
        except OSError as err:
            raise IntegrityError(f"{path} cannot be read ({err}); is it a symlink?") from err
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise IntegrityError(f"{path} is not a regular file")
            yield handle, st.st_size

    def open(self, rel: str) -> AbstractContextManager[tuple[Readable, int]]:
        return self._open(rel)

    def sha256(self, rel: str) -> str:
        return sha256_file(safe_path(self.root, rel), follow_symlinks=False)

    def listdir(self, folder: str) -> list[str]:
        path = self.folder(folder)
        return os.listdir(path) if path.is_dir() else []

    def remove(self, rel: str) -> None:
        path = safe_path(self.root, rel)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                path.unlink()
        except FileNotFoundError:
            pass

    def walk(self) -> list[tuple[str, str | None]]:
        found: list[tuple[str, str | None]] = []
        for folder, dirs, filenames in os.walk(self.root) if self.root.is_dir() else []:
            dirs.sort()
            for fname in filenames:
                path = Path(folder, fname)
                found.append((path.relative_to(self.root).as_posix(), os.readlink(path) if path.is_symlink() else None))
        return sorted(found)


def is_local(location: str | os.PathLike[str]) -> bool:
    """A path, or a file:// URL: anything without another scheme."""
    text = os.fspath(location)
    return "://" not in text or text.startswith(FILE_SCHEME)


def open_store(location: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> ArtifactStore:
    """The store for a path or URL. `options` are fsspec storage options for a URL (credentials, an
    endpoint: ``{"client_kwargs": {"endpoint_url": ...}}`` for an S3-compatible server); without
    them the file system's own configuration applies (for S3: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_PROFILE; for any protocol, fsspec's FSSPEC_<PROTOCOL> variables)."""
    text = os.fspath(location)
    if is_local(text):
        if options:
            raise ConfigError(f"storage options are for artifact URLs, not the local folder {text}")
        return LocalStore(Path(os.path.abspath(text.removeprefix(FILE_SCHEME))))
    from continual_adapters.files.remote import FsspecStore

    return FsspecStore(text, options)
