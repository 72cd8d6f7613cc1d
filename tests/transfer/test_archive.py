"""Task archives: export -> import gives the same predictions; hostile archives change nothing."""

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest
import torch
from safetensors import safe_open

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import BundleError, ConfigError, IntegrityError, RegistryError, TaskExistsError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from continual_adapters.transfer.archive import BUNDLE, MANIFEST, export_task, import_task
from tests.support.cli import cli_ok


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_encoder_dir):
    """A registry with two tiny tasks on the tiny encoder, and an archive of the second."""
    root = tmp_path_factory.mktemp("source")
    words = {"pos": ["good", "great", "fine", "lovely"], "neg": ["bad", "awful", "poor", "dull"]}
    rows = [
        {"text": f"a {w} film number {i}", "label": label} for label, ws in words.items() for i, w in enumerate(ws * 4)
    ]
    spec = DataSpec(
        train=_jsonl(root / "train.jsonl", rows),
        validation=_jsonl(root / "val.jsonl", rows[::3]),
        test=_jsonl(root / "test.jsonl", rows[1::3]),
    )
    registry = Registry(root / "registry.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    for name in ("first", "second"):
        runner.add_task(name, spec, train=TrainConfig(epochs=1, batch_size=8))
    archive = root / "second.cadapt.tar"
    result = export_task(registry, "second", archive)
    registry.close()
    return {"root": root, "url": str(root / "registry.db"), "archive": archive, "export": result}


def _state(registry):
    """The registry's rows and every file under its artifact folder, with hashes."""
    files = sorted(
        (
            os.path.relpath(os.path.join(d, f), registry.root),
            hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest(),
        )
        for d, _, fs in os.walk(registry.root)
        for f in fs
    )
    return registry.dump() if registry.initialized() else None, files


def test_export_writes_manifest_and_bundle(source):
    registry = Registry(source["url"])
    with tarfile.open(source["archive"]) as tar:
        assert tar.getnames() == [MANIFEST, BUNDLE]
        manifest = json.load(tar.extractfile(MANIFEST))
        bundle = tar.extractfile(BUNDLE).read()
    assert bundle == registry.bundle_path("second").read_bytes()
    assert manifest["files"][BUNDLE] == {"sha256": registry.bundle("second").sha256, "size_bytes": len(bundle)}
    assert manifest["base_model"]["sha256"] == registry.base_model().sha256
    assert manifest["provenance"]["source_stream"] == ["first", "second"]
    assert {e["kind"] for e in manifest["evaluations"]} == {"registration"}
    assert source["export"].sha256 == hashlib.sha256(source["archive"].read_bytes()).hexdigest()


def test_round_trip_gives_identical_predictions(source, tmp_path):
    target = Registry(tmp_path / "target.db")
    result = import_task(target, source["archive"])
    assert (result.task, result.position, result.base) == ("second", 1, "recorded from the archive")
    assert result.bundle_sha256 == result.source_bundle_sha256 == source["export"].bundle_sha256
    renamed = import_task(target, source["archive"], name="again")
    assert renamed.position == 2 and renamed.bundle_sha256 != renamed.source_bundle_sha256
    assert target.base_model().sha256 == Registry(source["url"]).base_model().sha256
    original = Runner(Registry(source["url"]), progress=False).evaluate_task("second")
    runner = Runner(target, progress=False)
    for name in ("second", "again"):
        imported = runner.evaluate_task(name)
        assert torch.equal(imported.logits, original.logits)
        assert imported.predictions_sha256 == original.predictions_sha256
    report = audit(runner)
    assert report.ok, report.to_dict()
    assert target.task("again").proof["imported"]["source_task"] == "second"
    skipped = [e for e in target.evaluations("second") if e.kind == "skipped"]
    assert [(e.after_tasks, e.value) for e in skipped] == [(2, 0.0)]


def test_cli_export_and_import(source, tmp_path):
    out = tmp_path / "first.tar"
    exported = json.loads(cli_ok("--registry", source["url"], "export", "first", "-o", out, "--json").output)
    assert exported["path"] == str(out) and exported["format"] == "cadapt-task-archive"
    target = tmp_path / "target.db"
    imported = json.loads(cli_ok("--registry", target, "import", out, "--name", "copied", "--json").output)
    assert imported["task"] == "copied" and imported["source_task"] == "first"
    assert "copied" in cli_ok("--registry", target, "tasks").output
    from click.testing import CliRunner

    from continual_adapters.cli import cli

    again = CliRunner().invoke(cli, ["--registry", str(target), "import", str(out), "--name", "copied"])
    assert again.exit_code == 1 and again.output.startswith("Error: task 'copied' already exists")


# -- hostile archives --------------------------------------------------------------------------


def _members(source):
    with tarfile.open(source["archive"]) as tar:
        return json.load(tar.extractfile(MANIFEST)), tar.extractfile(BUNDLE).read()


def _tar(path, entries):
    """entries: (name, bytes or None, tar type, link target)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link or ""
            info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return path


def _manifest_bytes(manifest):
    return json.dumps(manifest).encode()


def _hostile(case, source, tmp_path):
    manifest, bundle = _members(source)
    good = _manifest_bytes(manifest)
    reg = tarfile.REGTYPE
    path = tmp_path / f"{case}.tar"

    def with_manifest(edit, data=bundle):
        changed = json.loads(good)
        edit(changed)
        return _tar(path, [(MANIFEST, _manifest_bytes(changed), reg, None), (BUNDLE, data, reg, None)])

    flipped = bytearray(bundle)
    flipped[len(bundle) // 2] ^= 0x01
    pickle_bytes = b"\x80\x04\x95" + bytes(40) + b"."
    builders = {
        "traversal": lambda: _tar(
            path, [(MANIFEST, good, reg, None), (BUNDLE, bundle, reg, None), ("../escape", b"x", reg, None)]
        ),
        "absolute": lambda: _tar(path, [(MANIFEST, good, reg, None), ("/etc/cadapt", b"x", reg, None)]),
        "nested": lambda: _tar(path, [(MANIFEST, good, reg, None), ("sub/" + BUNDLE, bundle, reg, None)]),
        "symlink": lambda: _tar(path, [(MANIFEST, good, reg, None), (BUNDLE, None, tarfile.SYMTYPE, "/etc/passwd")]),
        "hardlink": lambda: _tar(path, [(MANIFEST, good, reg, None), (BUNDLE, None, tarfile.LNKTYPE, MANIFEST)]),
        "device": lambda: _tar(path, [(MANIFEST, good, reg, None), (BUNDLE, None, tarfile.CHRTYPE, None)]),
        "directory": lambda: _tar(path, [(MANIFEST, None, tarfile.DIRTYPE, None), (BUNDLE, bundle, reg, None)]),
        "duplicate": lambda: _tar(
            path, [(MANIFEST, good, reg, None), (BUNDLE, bundle, reg, None), (BUNDLE, bundle, reg, None)]
        ),
        "unlisted": lambda: _tar(
            path, [(MANIFEST, good, reg, None), (BUNDLE, bundle, reg, None), ("extra.bin", b"x", reg, None)]
        ),
        "missing_manifest": lambda: _tar(path, [(BUNDLE, bundle, reg, None)]),
        "missing_bundle": lambda: _tar(path, [(MANIFEST, good, reg, None)]),
        "manifest_not_json": lambda: _tar(path, [(MANIFEST, b"{not json", reg, None), (BUNDLE, bundle, reg, None)]),
        "manifest_duplicate_keys": lambda: _tar(
            path, [(MANIFEST, b'{"format": 1, "format": 2}', reg, None), (BUNDLE, bundle, reg, None)]
        ),
        "oversized_manifest": lambda: _tar(
            path, [(MANIFEST, b" " * (5 << 20), reg, None), (BUNDLE, bundle, reg, None)]
        ),
        "sha_mismatch": lambda: with_manifest(lambda m: m["files"][BUNDLE].update(sha256="0" * 64)),
        "flipped_bit": lambda: with_manifest(lambda m: None, bytes(flipped)),
        "truncated_bundle": lambda: with_manifest(lambda m: None, bundle[: len(bundle) // 2]),
        "pickle_bundle": lambda: with_manifest(
            lambda m: m["files"][BUNDLE].update(
                sha256=hashlib.sha256(pickle_bytes).hexdigest(), size_bytes=len(pickle_bytes)
            ),
            pickle_bytes,
        ),
        "wrong_labels": lambda: with_manifest(lambda m: m["task"].update(labels=["x", "y"])),
        "nan_score": lambda: _tar(
            path,
            [(MANIFEST, good.replace(b'"value": ', b'"value": NaN, "v": ', 1), reg, None), (BUNDLE, bundle, reg, None)],
        ),
        "truncated_archive": lambda: path.write_bytes(source["archive"].read_bytes()[:4000]) and path,
        "not_a_tar": lambda: path.write_bytes(b"PK\x03\x04 not a tar at all" * 40) and path,
        "gzip": lambda: path.write_bytes(gzip.compress(source["archive"].read_bytes())) and path,
    }
    return builders[case]()


HOSTILE = {
    "traversal": (BundleError, "path traversal"),
    "absolute": (BundleError, "absolute path"),
    "nested": (BundleError, "not a plain file name"),
    "symlink": (BundleError, "symbolic link"),
    "hardlink": (BundleError, "hard link"),
    "device": (BundleError, "device file"),
    "directory": (BundleError, "a directory"),
    "duplicate": (BundleError, "appears twice"),
    "unlisted": (BundleError, "not listed"),
    "missing_manifest": (BundleError, "no manifest.json"),
    "missing_bundle": (BundleError, "missing"),
    "manifest_not_json": (BundleError, "not valid JSON"),
    "manifest_duplicate_keys": (BundleError, "duplicate keys"),
    "oversized_manifest": (BundleError, "more than"),
    "sha_mismatch": (IntegrityError, "sha256"),
    "flipped_bit": (IntegrityError, "sha256"),
    "truncated_bundle": (IntegrityError, "bytes with sha256"),
    "pickle_bundle": (BundleError, f"{BUNDLE}:"),
    "wrong_labels": (BundleError, "does not match the bundle"),
    "nan_score": (BundleError, "not valid JSON"),
    "truncated_archive": (BundleError, "truncated"),
    "not_a_tar": (BundleError, "not an uncompressed tar"),
    "gzip": (BundleError, "not an uncompressed tar"),
}


@pytest.fixture
def target(source, tmp_path):
    """A copy of the source registry: every hostile import must leave it exactly as it was."""
    shutil.copytree(source["root"], tmp_path / "copy", ignore=shutil.ignore_patterns("*.tar"))
    return Registry(tmp_path / "copy" / "registry.db")


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_rejected_and_nothing_is_written(case, source, target, tmp_path):
    error, message = HOSTILE[case]
    path = _hostile(case, source, tmp_path)
    before = _state(target)
    with pytest.raises(error) as caught:
        import_task(target, path, name="imported")
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert _state(target) == before


def test_hostile_archive_into_a_fresh_registry_creates_nothing(source, tmp_path):
    path = _hostile("flipped_bit", source, tmp_path)
    with pytest.raises(IntegrityError):
        import_task(Registry(tmp_path / "fresh.db"), path)
    assert not (tmp_path / "fresh.db").exists() and not (tmp_path / "fresh").exists()


def test_existing_name_is_rejected_and_nothing_is_written(source, target):
    before = _state(target)
    with pytest.raises(TaskExistsError):
        import_task(target, source["archive"])
    assert _state(target) == before


def _foreign_base(registry, source_base, sha="f" * 64):
    registry.init()
    registry.set_base_model(
        "other-encoder",
        sha,
        source_base.num_parameters,
        source_base.architecture,
        source_base.hidden_size,
        source_base.num_layers,
    )


def test_base_mismatch_needs_the_flag(source, tmp_path):
    registry = Registry(tmp_path / "other.db")
    _foreign_base(registry, Registry(source["url"]).base_model())
    before = _state(registry)
    with pytest.raises(IntegrityError, match="allow-base-mismatch"):
        import_task(registry, source["archive"])
    assert _state(registry) == before
    result = import_task(registry, source["archive"], allow_base_mismatch=True)
    assert result.base == "mismatch allowed" and "base weights differ" in result.warnings[0]
    with safe_open(registry.bundle_path("second"), "pt") as handle:
        config = json.loads(handle.metadata()["cadapt"])
    assert config["config"]["base_sha256"] == "f" * 64
    source_base = Registry(source["url"]).base_model().sha256
    assert registry.task("second").proof["imported"]["source_base"]["sha256"] == source_base


def test_cli_import_warns_on_allowed_mismatch_and_errors_without(source, tmp_path):
    from click.testing import CliRunner

    from continual_adapters.cli import cli

    db = tmp_path / "other.db"
    _foreign_base(Registry(db), Registry(source["url"]).base_model())
    refused = CliRunner().invoke(cli, ["--registry", str(db), "import", str(source["archive"])])
    assert refused.exit_code == 1 and "Error: " in refused.output and "allow-base-mismatch" in refused.output
    accepted = CliRunner().invoke(
        cli, ["--registry", str(db), "import", str(source["archive"]), "--allow-base-mismatch"]
    )
    assert accepted.exit_code == 0 and "Warning: base weights differ" in accepted.output


@pytest.mark.parametrize("step", ["after_rename", "before_commit"])
def test_failure_inside_the_registration_protocol_leaves_nothing(step, source, target, monkeypatch):
    from continual_adapters.registry import registry as registry_module

    def fail(at):
        if at == step:
            raise OSError(f"injected failure at {at}")

    before = _state(target)
    monkeypatch.setattr(registry_module, "_fault_hook", fail)
    with pytest.raises((OSError, RegistryError), match="injected"):
        import_task(target, source["archive"], name="late")
    assert _state(target) == before


def test_tasks_of_other_methods_neither_leave_nor_receive(source, tmp_path, tiny_encoder_dir):
    """The archive format carries adapter bundles only: a task of another method has no archive form."""
    registry = Registry(tmp_path / "full.db")
    spec = DataSpec(train=str(source["root"] / "train.jsonl"), validation=str(source["root"] / "val.jsonl"))
    Runner(registry, encoder=tiny_encoder_dir, progress=False, method="full").add_task(
        "whole", spec, train=TrainConfig(epochs=1, batch_size=8)
    )
    with pytest.raises(ConfigError, match="'full' task: the archive format carries adapter bundles only"):
        export_task(registry, "whole", tmp_path / "whole.tar")
    before = _state(registry)
    with pytest.raises(ConfigError, match="holds full tasks; an adapter task needs a registry of adapter tasks"):
        import_task(registry, source["archive"], name="adapted")
    assert _state(registry) == before and not (tmp_path / "whole.tar").exists()
