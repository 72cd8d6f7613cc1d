"""The comparison methods: what each trains, what it stores, and whether earlier tasks move."""

import pytest
import torch

from continual_adapters.core.baselines import BaselineModel
from continual_adapters.core.config import AdapterConfig, TaskSpec, TrainConfig
from continual_adapters.core.errors import ConfigError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.files.atomic import sha256_bytes
from continual_adapters.files.bundle import bundle_bytes, load_task, save_task
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from tests.support.tiny import tiny_batch, tiny_encoder

NO_ADAPTER = AdapterConfig(bottleneck=0)


def spec(name, method, top_k=0):
    return TaskSpec(name, labels=("a", "b"), method=method, top_k=top_k, adapter=NO_ADAPTER)


def step(model, name, seed=0):
    """One SGD step on `name`'s trainable parameters with a loss that moves every weight."""
    ids, mask = tiny_batch(seed=seed)
    model.train()
    params = [p for p in model.task_modules(name).parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    model(ids, mask, task=name).pow(2).sum().backward()
    optimizer.step()
    model.eval()


@pytest.mark.parametrize("method,top_k", [("full", 0), ("top-k", 1), ("naive", 0)])
def test_training_never_touches_the_pristine_base(method, top_k):
    model = BaselineModel(tiny_encoder(), method=method, top_k=top_k or 2)
    model.add_task(spec("one", method, top_k))
    base = model.base_sha256(refresh=True)
    step(model, "one")
    assert model.base_sha256(refresh=True) == base


def test_full_and_top_k_isolate_tasks_naive_does_not():
    ids, mask = tiny_batch()
    for method, top_k, isolated in (("full", 0, True), ("top-k", 1, True), ("naive", 0, False)):
        model = BaselineModel(tiny_encoder(), method=method, top_k=top_k or 2).eval()
        model.add_task(spec("one", method, top_k))
        step(model, "one")
        before_logits, before_sha = model(ids, mask, task="one"), model.task_sha256("one")
        model.add_task(spec("two", method, top_k))
        step(model, "two", seed=3)
        assert model.isolates_tasks is isolated
        assert (model.task_sha256("one") == before_sha) is isolated, method
        assert torch.equal(model(ids, mask, task="one"), before_logits) is isolated, method


def test_stored_and_trained_parameter_counts():
    encoder_params = sum(p.numel() for p in tiny_encoder().parameters())
    layer_params = sum(p.numel() for p in tiny_encoder().encoder.layer[-1].parameters())
    head = 32 * 2 + 2
    counts = {}
    for method, top_k in (("full", 0), ("top-k", 1), ("naive", 0)):
        model = BaselineModel(tiny_encoder(), method=method, top_k=top_k or 2)
        model.add_task(spec("one", method, top_k))
        counts[method] = model.parameter_counts("one")
    assert counts["full"].total == counts["full"].trained == encoder_params + head
    assert counts["top-k"].total == counts["top-k"].trained == layer_params + head
    assert counts["naive"].total == head and counts["naive"].trained == encoder_params + head


@pytest.mark.parametrize("method,top_k", [("full", 0), ("top-k", 1), ("naive", 0)])
def test_bundle_round_trip_gives_identical_logits(tmp_path, method, top_k):
    ids, mask = tiny_batch()
    model = BaselineModel(tiny_encoder(), method=method, top_k=top_k or 2).eval()
    model.add_task(spec("one", method, top_k))
    step(model, "one")
    expected = model(ids, mask, task="one")
    path = save_task(model, "one", tmp_path / "one.safetensors")
    fresh = BaselineModel(tiny_encoder(), method=method, top_k=top_k or 2).eval()
    load_task(fresh, path, expected_sha256=sha256_bytes(bundle_bytes(model, "one")))
    assert torch.equal(fresh(ids, mask, task="one"), expected)


def test_top_k_bundle_holds_only_the_top_layers():
    model = BaselineModel(tiny_encoder(), method="top-k", top_k=1)
    model.add_task(spec("one", "top-k", 1))
    keys = model.task_modules("one").state_dict().keys()
    assert all(k.startswith(("head.", "layers.0.")) for k in keys)


def test_methods_do_not_mix():
    from continual_adapters.core.model import ContinualModel

    with pytest.raises(ConfigError, match="BaselineModel"):
        ContinualModel(tiny_encoder()).add_task(spec("one", "full"))
    with pytest.raises(ConfigError, match="this model runs"):
        BaselineModel(tiny_encoder(), method="naive").add_task(spec("one", "full"))
    with pytest.raises(ConfigError):
        TaskSpec("one", labels=("a", "b"), method="top-k", top_k=0)
    with pytest.raises(ConfigError):
        TaskSpec("one", labels=("a", "b"), method="ln-only", adapter=AdapterConfig(bottleneck=8))
    with pytest.raises(ConfigError, match="top_k"):
        BaselineModel(tiny_encoder(), method="top-k", top_k=5)


def test_runner_records_naive_drift_instead_of_aborting(tmp_path, data_dir, tiny_encoder_dir):
    registry = Registry(tmp_path / "registry.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False, method="naive")
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3)
    for name in ("sst2", "trec"):
        runner.add_task(name, DataSpec.from_folder(data_dir / name, max_train=48, max_eval=32), train=config)
    proof = registry.task("trec").proof
    assert proof["unchanged"] is False
    assert proof["before"]["base_sha256"] == proof["after"]["base_sha256"]
    assert proof["before"]["task_tensors"]["sst2"] != proof["after"]["task_tensors"]["sst2"]
    assert [t.method for t in registry.tasks()] == ["naive", "naive"]
    assert registry.bundle("trec").param_counts["total"] == registry.bundle("trec").param_counts["head"]
    with pytest.raises(ConfigError, match="registry of its own"):
        runner.add_task("rte", DataSpec.from_folder(data_dir / "rte", max_train=48), method="adapters")


def test_runner_infers_the_method_from_the_registry(tmp_path, data_dir, tiny_encoder_dir):
    registry = Registry(tmp_path / "registry.db")
    Runner(registry, encoder=tiny_encoder_dir, progress=False, method="top-k", top_layers=1).add_task(
        "sst2",
        DataSpec.from_folder(data_dir / "sst2", max_train=48, max_eval=32),
        train=TrainConfig(epochs=1, batch_size=16),
    )
    fresh = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    assert fresh.method == "top-k"
    recorded = registry.evaluations("sst2", kind="registration")[0].value
    assert fresh.evaluate_task("sst2").scores["accuracy"] == recorded
