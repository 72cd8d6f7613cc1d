"""The artifact store on each medium: a local folder, an S3 bucket on a real S3-compatible server (moto's,
when CADAPT_TEST_S3_ENDPOINT names it; tests/support/s3.py), and fsspec's in-memory file system (the
fsspec implementation without any server). The same behaviour is demanded of all three: a write is
visible under its final name only once complete, a failed write leaves nothing, reads and listings
see exactly what is there, and no path leaves the root."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from continual_adapters.core.errors import ConfigError, IntegrityError, StorageError
from continual_adapters.files.atomic import TEMP_PREFIX
from continual_adapters.files.remote import FsspecStore
from continual_adapters.files.storage import LocalStore, open_store
from tests.support.s3 import bucket_fs, new_bucket, s3_endpoint, storage_options

STEPS = ["after_tmp_write", "after_fsync", "after_rename", "after_dir_fsync"]
REL = "bundles/a-0123456789abcdef.safetensors"


class Medium:
    """A store, plus the test's own view of the medium under it (bypassing the store)."""

    def __init__(self, store, read, exists, put):
        self.store, self.read, self.exists, self.put = store, read, exists, put


def make_medium(kind: str, tmp_path) -> Medium:
    if kind == "local":
        root = tmp_path / "artifacts"
        return Medium(
            open_store(root),
            lambda rel: (root / rel).read_bytes(),
            lambda rel: os.path.lexists(root / rel),
            lambda rel, data: ((root / rel).parent.mkdir(parents=True, exist_ok=True), (root / rel).write_bytes(data)),
        )
    if kind == "memory":
        import fsspec

        fs, root = fsspec.filesystem("memory"), f"/cadapt-test-{uuid.uuid4().hex[:12]}"
        store = open_store(f"memory://{root}")
    else:
        endpoint = s3_endpoint()
        bucket = new_bucket(endpoint)
        fs, root = bucket_fs(endpoint), f"{bucket}/team"
        store = open_store(f"s3://{root}", storage_options(endpoint))
    return Medium(
        store,
        lambda rel: fs.cat_file(f"{root}/{rel}"),
        lambda rel: fs.exists(f"{root}/{rel}"),
        lambda rel, data: fs.pipe_file(f"{root}/{rel}", data),
    )


@pytest.fixture(params=["local", "memory", "s3"])
def medium(request, tmp_path):
    return make_medium(request.param, tmp_path)


@pytest.fixture(params=["memory", "s3"])
def remote(request, tmp_path):
    """The fsspec store only: the local one's guarantee is fsync and rename instead, tested with
    injected I/O errors in tests/registry/test_reliability_io.py."""
    return make_medium(request.param, tmp_path)


def test_a_written_file_reads_back_and_is_deleted(medium):
    store, data = medium.store, os.urandom(3000)
    store.prepare("bundles")
    store.write(REL, data, stem="a")
    assert medium.read(REL) == data
    assert store.stat(REL) == (3000, None)
    with store.open(REL) as (handle, size):
        assert size == 3000 and handle.read(10) == data[:10] and handle.read() == data[10:]
    assert store.sha256(REL) == hashlib.sha256(data).hexdigest()
    assert store.listdir("bundles") == ["a-0123456789abcdef.safetensors"], "no temporary object is left"
    assert store.walk() == [(REL, None)]
    store.remove(REL)
    assert not medium.exists(REL) and store.stat(REL) is None and store.listdir("bundles") == []
    store.remove(REL)  # an absent file is already removed


def test_a_file_has_its_final_name_only_once_complete(medium):
    """At each step of a write the medium is looked at: before the move there is only a temporary
    object, named so that fsck can tell whose unfinished write it is; after it, only the final one."""
    seen = {}

    def look(step: str) -> None:
        seen[step] = (medium.exists(REL), sorted(medium.store.listdir("bundles")))

    medium.store.prepare("bundles")
    medium.store.write(REL, b"complete bytes", stem="a", crash_point=look)
    assert list(seen) == STEPS
    for step in ("after_tmp_write", "after_fsync"):
        final, names = seen[step]
        assert not final and len(names) == 1 and names[0].startswith(f"{TEMP_PREFIX}a-"), (step, names)
    assert seen["after_rename"] == seen["after_dir_fsync"] == (True, ["a-0123456789abcdef.safetensors"])


@pytest.mark.parametrize("step", STEPS)
def test_a_write_that_fails_at_any_step_leaves_nothing(medium, step):
    def fail(at: str) -> None:
        if at == step:
            raise OSError(28, "No space left on device")

    medium.store.prepare("bundles")
    with pytest.raises(StorageError) as info:
        medium.store.write(REL, b"bytes", stem="a", crash_point=fail)
    assert "No space left on device" in str(info.value)
    assert medium.store.listdir("bundles") == [] and not medium.exists(REL)


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "", ".", "bundles/../../x"])
def test_no_path_leaves_the_root(medium, rel):
    for call in (
        lambda: medium.store.check(rel),
        lambda: medium.store.write(rel, b"x", stem="a"),
        lambda: medium.store.stat(rel),
        lambda: medium.store.remove(rel),
    ):
        with pytest.raises(IntegrityError):
            call()
    with pytest.raises(IntegrityError), medium.store.open(rel):
        pass


def test_an_absent_file_or_folder(medium):
    assert medium.store.stat(REL) is None and medium.store.listdir("probes") == [] and medium.store.walk() == []
    with pytest.raises(FileNotFoundError), medium.store.open(REL):
        pass


def test_listing_sees_what_another_client_wrote(medium):
    """Listings are never cached: fsck must see objects written since it last looked."""
    medium.store.prepare("bundles")
    assert medium.store.listdir("bundles") == []
    medium.put("bundles/stray", b"from elsewhere")
    assert medium.store.listdir("bundles") == ["stray"] and medium.store.stat("bundles/stray") == (14, None)


def test_an_upload_the_server_did_not_keep_whole_is_refused(remote, monkeypatch):
    """The bytes the server holds are read back and hashed before the move: a torn upload (here, the
    server keeps all but the last byte) fails the write, and neither object is left."""
    fs = remote.store.fs
    upload = fs.pipe_file
    monkeypatch.setattr(fs, "pipe_file", lambda path, data, **kw: upload(path, data[:-1], **kw))
    with pytest.raises(StorageError, match=r"verify failed: .*the server holds 4 bytes .* 5 were sent"):
        remote.store.write(REL, b"bytes", stem="a")
    monkeypatch.undo()
    assert remote.store.listdir("bundles") == []


def test_the_url_chooses_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store("arts"), LocalStore) and open_store("arts").local_root == tmp_path / "arts"
    assert open_store(f"file://{tmp_path}/x").local_root == tmp_path / "x"
    assert isinstance(open_store("memory://bucket/prefix"), FsspecStore)
    assert open_store("memory://bucket/prefix/").location("bundles/x") == "memory://bucket/prefix/bundles/x"
    with pytest.raises(ConfigError, match="storage options"):
        open_store("arts", {"key": "k"})
    with pytest.raises(ConfigError, match="nosuchproto"):
        open_store("nosuchproto://bucket/prefix")
