"""Artifact files on any fsspec file system: S3 (``s3://``, with s3fs), Google Cloud Storage (``gs://``,
gcsfs), Azure (``az://``, adlfs), or anything else fsspec can write to.

A team registry keeps its rows in PostgreSQL and its files in a bucket, so machines that share no
file system can share a stream. The guarantees of the local folder hold here too, kept by other
means (files/storage.py names them): there is no fsync and often no rename, so a write uploads
under a temporary name, reads back what the server holds and compares its size and sha256 with the
bytes sent, moves it to the final name and compares again. Only then does the caller commit the
row that points at it (the registry's finish_task checks the final object once more, inside its
transaction). A crash at any step leaves at worst a temporary or unreferenced object, which fsck
lists as an orphan.

Listings are never cached (``use_listings_cache=False``): fsck and a second machine must see the
bucket as it is, not as this process last listed it.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import fsspec

from continual_adapters.core.errors import CadaptError, ConfigError, IntegrityError, MissingExtraError, StorageError
from continual_adapters.files.atomic import sha256_bytes, temp_name
from continual_adapters.files.storage import ArtifactStore, Entry, Readable, relative_parts

# The optional extra that brings each protocol's fsspec driver, for the message when it is missing.
EXTRAS = {"s3": "s3", "s3a": "s3"}

T = TypeVar("T")


def _translated(call: Callable[[], T]) -> T:
    """Runs one call into the file system. Its drivers raise their own exceptions for a dropped
    connection or a refused request (botocore's, aiohttp's); those become OSError, as the local
    file system would raise, so the registry handles both media with the same code."""
    try:
        return call()
    except (OSError, CadaptError):
        raise
    except Exception as err:
        raise OSError(errno.EIO, f"{type(err).__name__}: {err}") from err


class _Reader:
    """A remote file's reads, translated like every other call."""

    def __init__(self, handle: Any):
        self.handle = handle

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = _translated(lambda: self.handle.read(size))
        return data


class FsspecStore(ArtifactStore):
    """Task files under a URL, through fsspec. `options` are the file system's storage options."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None):
        self.url = url.rstrip("/")
        protocol = self.url.split("://", 1)[0]
        try:
            self.fs, root = fsspec.url_to_fs(self.url, **{"use_listings_cache": False, **dict(options or {})})
        except ImportError as err:
            extra = EXTRAS.get(protocol)
            hint = f"pip install 'continual_adapters[{extra}]'" if extra else f"install fsspec's driver for {protocol}"
            raise MissingExtraError(f"artifacts at {self.url} need a driver for {protocol}:// ({hint}): {err}") from err
        except (ValueError, TypeError) as err:
            raise ConfigError(f"cannot use {self.url!r} as an artifact location: {err}") from err
        self.root = root.rstrip("/")
        if not self.root:
            raise ConfigError(f"artifact URL {self.url!r} names no bucket or folder")

    def _full(self, rel: str) -> str:
        return posixpath.join(self.root, *relative_parts(rel, self.url))

    def check(self, rel: str) -> None:
        relative_parts(rel, self.url)

    def prepare(self, folder: str) -> None:
        """A folder on an object store is only a key prefix, so this mostly checks the bucket is there
        (s3fs creates a missing bucket when the credentials allow)."""
        path = self._full(folder)
        _translated(lambda: self.fs.makedirs(path, exist_ok=True))

    def _verify(self, path: str, size: int, digest: str) -> None:
        """What the server holds at `path` is exactly the bytes sent: an upload cut short, or changed
        in transit or at rest, fails here instead of being recorded."""
        found = _translated(lambda: self.fs.info(path)).get("size")
        if found is None or int(found) != size:
            raise OSError(errno.EIO, f"the server holds {found} bytes at {path}, {size} were sent")
        actual = sha256_bytes(_translated(lambda: self.fs.cat_file(path)))
        if actual != digest:
            raise OSError(errno.EIO, f"the server holds sha256 {actual} at {path}, {digest} was sent")

    def _discard(self, path: str) -> None:
        try:
            _translated(lambda: self.fs.rm_file(path))
        except FileNotFoundError:
            pass
        except OSError:
            pass  # left for fsck, which lists it as an orphan

    def write(self, rel: str, data: bytes, *, stem: str, crash_point: Callable[[str], None] | None = None) -> None:
        final = self._full(rel)
        tmp = posixpath.join(posixpath.dirname(final), temp_name(stem))
        hook = crash_point or (lambda step: None)
        size, digest = len(data), sha256_bytes(data)
        existed, step = True, "upload"
        try:
            existed = _translated(lambda: self.fs.exists(final))
            _translated(lambda: self.fs.pipe_file(tmp, data))
            hook("after_tmp_write")
            step = "verify"
            self._verify(tmp, size, digest)
            hook("after_fsync")
            step = "rename"
            _translated(lambda: self.fs.mv(tmp, final))
            hook("after_rename")
            step = "verify final"
            self._verify(final, size, digest)
            hook("after_dir_fsync")
        except OSError as err:
            self._discard(tmp)
            if step in ("rename", "verify final") and not existed:
                self._discard(final)
            raise StorageError(self.location(rel), step, str(err)) from err
        except BaseException:
            self._discard(tmp)
            raise

    def stat(self, rel: str) -> Entry | None:
        path = self._full(rel)
        try:
            info = _translated(lambda: self.fs.info(path))
        except FileNotFoundError:
            return None
        size = int(info.get("size") or 0)
        return Entry(size, None) if info.get("type") == "file" else Entry(size, "is not a regular file")

    @contextmanager
    def _open(self, rel: str) -> Iterator[tuple[Readable, int]]:
        entry = self.stat(rel)
        if entry is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", self.location(rel))
        if entry.problem is not None:
            raise IntegrityError(f"{self.location(rel)} {entry.problem}")
        handle = _translated(lambda: self.fs.open(self._full(rel), "rb"))
        try:
            yield _Reader(handle), int(handle.size)
        finally:
            handle.close()

    def open(self, rel: str) -> AbstractContextManager[tuple[Readable, int]]:
        return self._open(rel)

    def listdir(self, folder: str) -> list[str]:
        path = self._full(folder)
        try:
            listed = _translated(lambda: self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []
        names = (posixpath.basename(str(p).rstrip("/")) for p in listed if str(p).rstrip("/") != path)
        return sorted(n for n in names if n)

    def remove(self, rel: str) -> None:
        if (entry := self.stat(rel)) is None or entry.problem is not None:
            return
        path = self._full(rel)
        try:
            _translated(lambda: self.fs.rm_file(path))
        except FileNotFoundError:
            pass

    def walk(self) -> list[tuple[str, str | None]]:
        try:
            paths = _translated(lambda: self.fs.find(self.root, withdirs=False))
        except FileNotFoundError:
            return []
        prefix = self.root + "/"
        return sorted((str(p)[len(prefix) :], None) for p in paths if str(p).startswith(prefix))
