"""A registry whose files are in an S3 bucket (moto's server, tests/support/s3.py), its rows in SQLite or
PostgreSQL: the guarantees of the local folder hold there. An object altered or deleted behind the
registry's back is reported by fsck and refused on every read, never used; a crash mid-upload leaves
only what fsck finds and repairs; removing a task deletes its objects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from continual_adapters.core.errors import BundleError, IntegrityError, RegistryError
from continual_adapters.files.atomic import TEMP_PREFIX, sha256_bytes
from continual_adapters.files.bundle import load_stored_task
from continual_adapters.registry import Registry
from tests.registry.helpers import add_task
from tests.support.hostile_bundles import VALID, VALID_SHA
from tests.support.paths import ROOT
from tests.support.s3 import bucket_fs, environment, new_bucket, s3_endpoint, storage_options
from tests.support.tiny import tiny_model

PROBE = b"probe bytes"


class Bucket:
    def __init__(self):
        self.endpoint = s3_endpoint()
        self.name = new_bucket(self.endpoint)
        self.fs = bucket_fs(self.endpoint)
        self.url = f"s3://{self.name}/team"

    def key(self, rel: str) -> str:
        return f"{self.name}/team/{rel}"

    def objects(self) -> list[str]:
        return sorted(p.removeprefix(f"{self.name}/team/") for p in self.fs.find(self.name))


@pytest.fixture
def bucket() -> Bucket:
    return Bucket()


def on_bucket(backend, bucket: Bucket) -> Registry:
    registry = Registry(backend.url, artifacts=bucket.url, storage_options=storage_options(bucket.endpoint))
    registry.init()
    return registry


def with_probe(registry: Registry) -> tuple[str, str]:
    """Task "a" with a real bundle (a tiny model's) and a probe; returns their paths."""
    add_task(registry, "a", payload=VALID)
    probe = registry.write_artifact("a", "probe", PROBE)
    registry.add_artifact("a", probe)
    return registry.bundle("a").path, probe.path


def test_a_task_lives_in_the_bucket(backend, bucket):
    registry = on_bucket(backend, bucket)
    bundle, probe = with_probe(registry)
    assert bucket.objects() == sorted([bundle, probe]), "only complete objects, under their final names"
    assert bucket.fs.cat_file(bucket.key(bundle)) == VALID
    other = Registry(backend.url, artifacts=bucket.url, storage_options=storage_options(bucket.endpoint))
    assert other.verify_bundle("a").sha256 == VALID_SHA and other.read_artifact("a", "probe") == PROBE
    assert other.fsck().ok
    assert [f["path"] for f in other.dump()["files"]] == sorted([bundle, probe])
    model = tiny_model()
    load_stored_task(model, other.store, bundle, expected_sha256=VALID_SHA)
    assert "a" in model.tasks
    with pytest.raises(RegistryError, match="not in a folder"):
        other.root  # noqa: B018  (no local folder to open files in by path)


@pytest.mark.parametrize("change", ["same size", "shorter"])
def test_an_altered_object_is_reported_and_never_used(backend, bucket, change):
    registry = on_bucket(backend, bucket)
    bundle, probe = with_probe(registry)
    altered = VALID[:-1] + bytes([VALID[-1] ^ 1]) if change == "same size" else VALID[:-4]
    bucket.fs.pipe_file(bucket.key(bundle), altered)
    bucket.fs.pipe_file(bucket.key(probe), PROBE.upper())
    report = registry.fsck()
    assert report.checksum_mismatches == ["a", "a:probe"] and report.missing_files == []
    expected = "sha256" if change == "same size" else "size"
    with pytest.raises(IntegrityError, match=expected):
        registry.verify_bundle("a")
    with pytest.raises(IntegrityError, match="sha256"):
        registry.read_artifact("a", "probe")
    model = tiny_model()
    with pytest.raises(BundleError, match=re.escape(bucket.url + "/" + bundle)) as refused:
        load_stored_task(model, registry.store, bundle, expected_sha256=VALID_SHA)
    assert change == "shorter" or isinstance(refused.value, IntegrityError), "same size: the sha256 refuses it"
    assert "a" not in model.tasks, "nothing of the altered bundle is attached"


def test_a_deleted_object_is_reported_and_never_used(backend, bucket):
    registry = on_bucket(backend, bucket)
    bundle, probe = with_probe(registry)
    bucket.fs.rm_file(bucket.key(bundle))
    bucket.fs.rm_file(bucket.key(probe))
    report = registry.fsck()
    assert report.missing_files == ["a", "a:probe"] and report.checksum_mismatches == []
    with pytest.raises(IntegrityError, match="missing"):
        registry.verify_bundle("a")
    with pytest.raises(RegistryError, match="missing; run `cadapt fsck`"):
        registry.read_artifact("a", "probe")
    with pytest.raises(BundleError, match="no such bundle file"):
        load_stored_task(tiny_model(), registry.store, bundle, expected_sha256=VALID_SHA)


def test_orphans_are_repaired_and_a_purged_task_takes_its_objects(backend, bucket):
    registry = on_bucket(backend, bucket)
    bundle, probe = with_probe(registry)
    strays = [f"bundles/gone-{'0' * 16}.safetensors", f"probes/{TEMP_PREFIX}ghost-{'1' * 16}"]
    for rel in strays:
        bucket.fs.pipe_file(bucket.key(rel), b"debris")
    assert registry.fsck().orphan_files == sorted(strays)
    assert registry.fsck(repair=True).orphan_files == sorted(strays)
    assert bucket.objects() == sorted([bundle, probe]) and registry.fsck().ok
    registry.remove_task("a")
    assert bucket.objects() == sorted([bundle, probe]), "a retired task keeps its objects, for restore"
    registry.remove_task("a", purge=True)
    assert bucket.objects() == [], "purging deletes the bundle and the probe"
    assert registry.fsck().ok


CRASH = textwrap.dedent(
    """
    import os, sys
    from continual_adapters.registry import Registry

    url, artifacts, step = sys.argv[1:]
    registry = Registry(url, artifacts=artifacts)
    registry.begin_task("b", labels=["x", "y"], head="classification", primary_metric="accuracy", data={})
    os.environ["CADAPT_CRASH_AT"] = step
    registry.write_file("b", os.urandom(256))
    """
)


@pytest.mark.parametrize("step", ["after_tmp_write", "after_fsync", "after_rename", "after_dir_fsync"])
def test_a_crash_mid_upload_leaves_only_what_fsck_repairs(backend, bucket, step):
    """A writer killed (os._exit, like kill -9) at each step of its upload, on another process that
    names the server through AWS_ENDPOINT_URL as a user would: no task becomes ready, and fsck finds
    the dead registration and its object (the temporary one before the move, the final one after)."""
    registry = on_bucket(backend, bucket)
    bundle, probe = with_probe(registry)
    env = {**os.environ, **environment(bucket.endpoint), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CRASH, backend.url, bucket.url, step], env=env, timeout=120)
    assert done.returncode == 97
    left = sorted(set(bucket.objects()) - {bundle, probe})
    assert len(left) == 1 and left[0].startswith(
        f"bundles/{TEMP_PREFIX}b-" if step in ("after_tmp_write", "after_fsync") else "bundles/b-"
    ), left
    assert [t.name for t in registry.tasks()] == ["a"]
    report = registry.fsck()
    assert report.dead_pending == ["b"] and report.orphan_files == left
    registry.fsck(repair=True)
    assert bucket.objects() == sorted([bundle, probe]) and registry.fsck().ok
    assert registry.verify_bundle("a").sha256 == sha256_bytes(VALID)
