"""The archive's container: writing the uncompressed tar, and reading one without trusting it.

An archive is an uncompressed tar of exactly two members, ``manifest.json`` and
``bundle.safetensors``. Tar because every system can list and unpack it; uncompressed because the
float32 tensors do not compress and a plain layout keeps the checks simple.

Reading is kept apart from registering so that everything the import later relies on comes from
one in-memory read that never extracts: no member name can reach the file system; each member
must be a flat regular file named in the manifest (no absolute paths, no ``..``, no links or
devices, no duplicates, bounded sizes), and the bundle must match the manifest's sha256 and size.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from continual_adapters.core.errors import BundleError, IntegrityError
from continual_adapters.data import strictjson
from continual_adapters.files.atomic import sha256_bytes
from continual_adapters.files.bundle import MAX_BUNDLE_BYTES
from continual_adapters.transfer.manifest import BUNDLE, MANIFEST

MAX_MANIFEST_BYTES = 4 << 20
MAX_MEMBERS = 8
MAX_ARCHIVE_BYTES = MAX_BUNDLE_BYTES + MAX_MANIFEST_BYTES + (1 << 20)
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Archive:
    manifest: dict[str, Any]
    bundle: bytes
    sha256: str


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """Fixed owner, mode and time, so an archive says nothing about the exporting machine's users."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member_name, data in members.items():
            info = tarfile.TarInfo(member_name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _check_member(member: tarfile.TarInfo, source: str) -> None:
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"{source}: member {name!r} has an absolute path")
    if ".." in parts:
        raise BundleError(f"{source}: member {name!r} leaves the archive (path traversal)")
    kinds = [
        (member.issym(), "a symbolic link"),
        (member.islnk(), "a hard link"),
        (member.ischr() or member.isblk(), "a device file"),
        (member.isfifo(), "a FIFO"),
        (member.isdir(), "a directory"),
    ]
    for is_kind, what in kinds:
        if is_kind:
            raise BundleError(f"{source}: member {name!r} is {what}; only regular files are accepted")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BundleError(f"{source}: member {name!r} has unsupported tar type {member.type!r}")
    if not _MEMBER_NAME.match(name):
        raise BundleError(f"{source}: member name {name!r} is not a plain file name")
    limit = MAX_MANIFEST_BYTES if name == MANIFEST else MAX_BUNDLE_BYTES
    if member.size > limit:
        raise BundleError(f"{source}: member {name!r} is {member.size} bytes, more than the {limit} allowed")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, source: str) -> bytes:
    try:
        handle = tar.extractfile(member)
        data = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{source}: member {member.name!r} is truncated or damaged ({exc})") from None
    if len(data) != member.size:
        raise BundleError(f"{source}: member {member.name!r} is truncated ({len(data)} of {member.size} bytes)")
    return data


def _members(tar: tarfile.TarFile, source: str) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            raise BundleError(f"{source}: damaged or truncated tar archive ({exc})") from None
        if member is None:
            return members
        _check_member(member, source)
        if member.name in members:
            raise BundleError(f"{source}: member {member.name!r} appears twice")
        if len(members) == MAX_MEMBERS:
            raise BundleError(f"{source}: more than {MAX_MEMBERS} members; not a cadapt archive")
        members[member.name] = member


def _strict_json(data: bytes, source: str) -> Any:
    try:
        return strictjson.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{source}: {MANIFEST} is not valid JSON ({exc})") from None


def read_archive(path: str | os.PathLike[str]) -> Archive:
    """Everything from one in-memory read, so what is checked is exactly what gets imported."""
    source = str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"{source}: no such archive") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{source}: not a regular file; refusing to read it as an archive")
    if st.st_size > MAX_ARCHIVE_BYTES:
        raise BundleError(f"{source}: {st.st_size} bytes is larger than any archive ({MAX_ARCHIVE_BYTES})")
    data = Path(path).read_bytes()
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as exc:
        raise BundleError(f"{source}: not an uncompressed tar archive ({exc})") from None
    with tar:
        members = _members(tar, source)
        if MANIFEST not in members:
            raise BundleError(f"{source}: no {MANIFEST}; not a cadapt archive")
        manifest = _strict_json(_read_member(tar, members[MANIFEST], source), source)
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or set(files) != {BUNDLE}:
            raise BundleError(f"{source}: {MANIFEST} must list exactly one file, {BUNDLE}")
        for member_name in members:
            if member_name not in files and member_name != MANIFEST:
                raise BundleError(f"{source}: member {member_name!r} is not listed in {MANIFEST}")
        if BUNDLE not in members:
            raise BundleError(f"{source}: {BUNDLE} is listed in {MANIFEST} but missing")
        bundle = _read_member(tar, members[BUNDLE], source)
    entry = files[BUNDLE]
    if (
        not isinstance(entry, dict)
        or entry.get("size_bytes") != len(bundle)
        or entry.get("sha256") != sha256_bytes(bundle)
    ):
        said = f"{entry.get('size_bytes')} bytes, sha256 {entry.get('sha256')}" if isinstance(entry, dict) else entry
        raise IntegrityError(
            f"{source}: {BUNDLE} is {len(bundle)} bytes with sha256 {sha256_bytes(bundle)}, {MANIFEST} says {said}"
        )
    return Archive(manifest, bundle, sha256_bytes(data))
