"""`--method lora`: one PEFT LoRA per task, isolated like adapters, on tiny random encoders."""

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import save as st_save

from continual_adapters.core.architectures import ARCHITECTURES
from continual_adapters.core.baselines import model_for_method
from continual_adapters.core.config import AdapterConfig, LoraSettings, MethodOptions, TaskSpec, TrainConfig
from continual_adapters.core.errors import BundleError, ConfigError, TaskExistsError
from continual_adapters.core.lora import LoraModel
from continual_adapters.core.model import ContinualModel, pool
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.files.atomic import sha256_bytes, sha256_file
from continual_adapters.files.bundle import bundle_bytes, bundle_config, bundle_metadata, load_task, save_task
from continual_adapters.registry.registry import Registry
from continual_adapters.report.reporting import format_task_details, task_details
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from tests.support.tiny import TINY, tiny_batch, tiny_encoder

HIDDEN, LAYERS = 32, 2  # every tiny encoder (tests/support/tiny.py)


def spec(name, rank=4, targets=(), labels=("a", "b")):
    return TaskSpec(
        name,
        labels=labels,
        method="lora",
        adapter=AdapterConfig(bottleneck=0),
        lora=LoraSettings(rank=rank, alpha=2.0 * rank, targets=targets),
    )


def lora_model(model_type="bert"):
    return LoraModel(tiny_encoder(model_type)).eval()


def step(model, name, steps=3, seed=0):
    """A few SGD steps on `name`'s trainable parameters with a loss that moves every weight (after
    the first step B is non-zero, so A's gradient is too). All of them must require grad, whatever
    task ran last (PEFT's set_adapter freezes the inactive ones)."""
    ids, mask = tiny_batch(seed=seed)
    modules = model.task_modules(name)
    params = [p for p in modules.parameters() if p.requires_grad]
    assert len(params) == len(list(modules.parameters()))
    optimizer = torch.optim.SGD(params, lr=0.5)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(ids, mask, task=name).pow(2).sum().backward()
        optimizer.step()
    model.eval()


def snapshot(model, name):
    return {k: v.clone() for k, v in model.task_modules(name).state_dict().items()}


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def bare_hidden(model_type, ids, mask):
    """The hidden states of an untouched copy of the same tiny encoder."""
    with torch.no_grad():
        return tiny_encoder(model_type)(input_ids=ids, attention_mask=mask).last_hidden_state


def captured_hidden(model, ids, mask, task):
    """(logits, last hidden state) of a forward through the model, the states caught on the way out."""
    seen = []
    handle = model.encoder.register_forward_hook(lambda _m, _a, out: seen.append(out.last_hidden_state))
    try:
        with torch.no_grad():
            logits = model(ids, mask, task=task)
    finally:
        handle.remove()
    return logits, seen[-1]


def peft_adapters(model):
    """Adapter names present in the encoder's PEFT layers, and those in its peft_config."""
    layers = {n for m in model.encoder.modules() if isinstance(m, LoraLayer) for n in m.lora_A}
    return layers, set(getattr(model.encoder, "peft_config", {}))


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_parameter_count_is_rank_times_in_plus_out_per_target(model_type):
    model = lora_model(model_type)
    model.add_task(spec("one", rank=4))
    # Query and value projections are HIDDEN x HIDDEN in every layer.
    expected = LAYERS * 2 * 4 * (HIDDEN + HIDDEN)
    counts = model.parameter_counts("one")
    assert counts.lora == expected == model.lora_parameter_count(spec("one", rank=4).lora)
    assert counts.head == HIDDEN * 2 + 2
    assert counts.total == counts.trained == expected + counts.head
    assert counts.adapter == counts.layer_norm == counts.encoder == 0
    assert counts.to_dict()["lora"] == expected and counts.to_dict()["total"] == counts.total
    assert counts.bytes == 4 * counts.total
    assert model.spec("one").lora.targets == ARCHITECTURES[model_type].lora_targets


def test_parameter_count_of_other_targets_and_ranks():
    model = lora_model()
    # intermediate.dense is HIDDEN -> intermediate_size (64) in each layer.
    ffn = LoraSettings(rank=3, targets=("intermediate.dense",))
    assert model.lora_parameter_count(ffn) == LAYERS * 3 * (HIDDEN + 64)
    model.add_task(spec("one", rank=3, targets=("intermediate.dense",)))
    assert model.parameter_counts("one").lora == LAYERS * 3 * (HIDDEN + 64)
    # Counting once a layer is wrapped by PEFT still sees the linear layer it wraps.
    assert model.lora_parameter_count(LoraSettings(rank=5)) == LAYERS * 2 * 5 * 2 * HIDDEN
    adapters = ContinualModel(tiny_encoder())  # other methods' recorded counts keep their keys
    adapters.add_task(TaskSpec("x", labels=("a", "b")))
    assert "lora" not in adapters.parameter_counts("x").to_dict()


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_new_task_computes_exactly_the_base_encoder(model_type):
    ids, mask = tiny_batch()
    model = lora_model(model_type)
    model.add_task(spec("one"))
    logits, hidden = captured_hidden(model, ids, mask, "one")
    base = bare_hidden(model_type, ids, mask)
    assert torch.equal(hidden, base)
    head = model.task_modules("one").head
    assert torch.equal(logits, head(pool(base, mask, "mean")))


def test_training_one_task_leaves_every_other_task_and_the_base_bit_identical():
    ids, mask = tiny_batch()
    model = lora_model()
    base = model.base_sha256(refresh=True)
    model.add_task(spec("one"))
    model.add_task(spec("two", labels=("x", "y", "z")))
    step(model, "two", seed=4)
    two_state, two_logits = snapshot(model, "two"), model(ids, mask, task="two")
    one_state = snapshot(model, "one")
    step(model, "one")
    assert states_equal(snapshot(model, "two"), two_state)
    assert torch.equal(model(ids, mask, task="two"), two_logits)
    trained = snapshot(model, "one")
    lora_keys = [k for k in trained if k.startswith("lora.")]
    assert lora_keys and all(not torch.equal(trained[k], one_state[k]) for k in lora_keys)  # A and B moved
    model.add_task(spec("three"))
    step(model, "three", seed=5)
    assert states_equal(snapshot(model, "one"), trained) and states_equal(snapshot(model, "two"), two_state)
    assert model.base_sha256(refresh=True) == base
    assert not any(p.requires_grad for n, p in model.encoder.named_parameters() if ".lora_" not in n)


def test_routing_changes_outputs_and_no_task_is_the_bare_encoder():
    ids, mask = tiny_batch()
    model = lora_model()
    model.add_task(spec("one"))
    _, before = captured_hidden(model, ids, mask, "one")
    step(model, "one")
    _, after = captured_hidden(model, ids, mask, "one")
    base = bare_hidden("bert", ids, mask)
    assert torch.equal(before, base) and not torch.allclose(after, base)
    model.set_task(None)
    with torch.no_grad():
        assert torch.equal(model.encode(ids, mask, pooling="mean"), pool(base, mask, "mean"))
    model.set_task("one")  # and back: the routed task's LoRA is active again
    _, again = captured_hidden(model, ids, mask, "one")
    assert torch.equal(again, after)


def test_forward_mixed_equals_per_task_forwards_row_for_row():
    ids, mask = tiny_batch(batch=5)
    model = lora_model()
    for name, seed in (("one", 0), ("two", 2)):
        model.add_task(spec(name, labels=("a", "b", "c") if name == "two" else ("a", "b")))
        step(model, name, seed=seed)
    tasks = ["two", "one", "two", "two", "one"]
    with torch.no_grad():
        mixed = model.forward_mixed(ids, mask, tasks=tasks)
        for name in ("one", "two"):
            rows = [i for i, t in enumerate(tasks) if t == name]
            alone = model(ids[rows], mask[rows], task=name)
            whole = model(ids, mask, task=name)
            for position, row in enumerate(rows):
                assert torch.equal(mixed[row], alone[position])
                assert torch.allclose(mixed[row], whole[row], atol=1e-6)
    assert [len(row) for row in mixed] == [3, 2, 3, 3, 2]
    with pytest.raises(ConfigError):
        model.forward_mixed(ids, mask, tasks=["one"])


def test_bundle_round_trip_into_a_fresh_model_reproduces_logits(tmp_path):
    ids, mask = tiny_batch()
    model = lora_model()
    model.add_task(spec("one"))
    step(model, "one")
    expected = model(ids, mask, task="one")
    data = bundle_bytes(model, "one")
    path = save_task(model, "one", tmp_path / "one.safetensors")
    fresh = lora_model()
    fresh.add_task(spec("other"))
    step(fresh, "other", seed=3)
    loaded = load_task(fresh, path, expected_sha256=sha256_bytes(data))
    assert loaded.lora.targets == ("query", "value")  # resolved names recorded in the bundle
    assert torch.equal(fresh(ids, mask, task="one"), expected)
    assert states_equal(snapshot(fresh, "one"), snapshot(model, "one"))
    assert bundle_bytes(fresh, "one") == data
    assert fresh.parameter_counts("one") == model.parameter_counts("one")


def test_bundle_claiming_a_larger_lora_than_it_holds_is_refused_unbuilt(tmp_path):
    model = lora_model()
    model.add_task(spec("one"))
    tensors = {k: v.detach().contiguous() for k, v in model.task_modules("one").state_dict().items()}
    config = bundle_config(model, "one")
    config["task"]["lora"]["rank"] = 1 << 20
    path = tmp_path / "huge.safetensors"
    path.write_bytes(st_save(tensors, metadata=bundle_metadata(config)))
    fresh = lora_model()
    with pytest.raises(BundleError, match="LoRA"):
        load_task(fresh, path)
    assert "one" not in fresh.tasks and peft_adapters(fresh) == (set(), set())


def test_remove_task_deletes_its_lora_and_the_name_can_be_added_again():
    ids, mask = tiny_batch()
    model = lora_model()
    base = model.base_sha256(refresh=True)
    model.add_task(spec("one"))
    model.add_task(spec("two"))
    step(model, "one")
    step(model, "two", seed=2)
    two_state, two_logits = snapshot(model, "two"), model(ids, mask, task="two")
    model.set_task("one")
    model.remove_task("one")
    assert model.active_task is None and "one" not in model.tasks
    assert peft_adapters(model) == ({"two"}, {"two"})
    model.add_task(spec("one", rank=2))
    logits, hidden = captured_hidden(model, ids, mask, "one")
    assert torch.equal(hidden, bare_hidden("bert", ids, mask))  # a new LoRA, not the deleted one
    assert model.parameter_counts("one").lora == LAYERS * 2 * 2 * 2 * HIDDEN
    assert states_equal(snapshot(model, "two"), two_state)
    assert torch.equal(model(ids, mask, task="two"), two_logits)
    model.remove_task("two")
    model.remove_task("one")
    assert peft_adapters(model) == (set(), set())
    assert model.base_sha256(refresh=True) == base
    with torch.no_grad():
        assert torch.equal(model.encode(ids, mask), pool(bare_hidden("bert", ids, mask), mask, "mean"))


def test_refusals_are_typed_and_leave_no_adapter_behind():
    with pytest.raises(ConfigError, match="bottleneck"):
        TaskSpec("one", labels=("a", "b"), method="lora", adapter=AdapterConfig(bottleneck=8), lora=LoraSettings())
    with pytest.raises(ConfigError, match="LoRA settings"):
        TaskSpec("one", labels=("a", "b"), method="lora", adapter=AdapterConfig(bottleneck=0))
    model = lora_model()
    with pytest.raises(ConfigError, match="ContinualModel"):
        model.add_task(TaskSpec("one", labels=("a", "b")))
    with pytest.raises(ConfigError, match="LoraModel"):
        ContinualModel(tiny_encoder()).add_task(spec("one"))
    with pytest.raises(ConfigError, match="match no linear layer"):
        model.add_task(spec("one", targets=("no_such_module",)))
    with pytest.raises(ConfigError):
        model.add_task(spec("one", targets=("attention",)))  # a whole block, not a linear layer
    assert peft_adapters(model) == (set(), set()) and not model.tasks
    model.add_task(spec("one"))
    with pytest.raises(TaskExistsError):
        model.add_task(spec("one"))
    assert peft_adapters(model) == ({"one"}, {"one"})


def test_model_for_method_builds_a_lora_model(tiny_encoder_dir):
    model = model_for_method("lora", tiny_encoder_dir)
    assert isinstance(model, LoraModel) and model.isolates_tasks


def test_runner_adds_lora_tasks_with_an_unchanged_proof_and_a_passing_audit(tmp_path, data_dir, tiny_encoder_dir):
    registry = Registry(tmp_path / "r.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, method="lora", progress=False)
    train = TrainConfig(epochs=1, batch_size=16, lr=1e-2)
    options = MethodOptions(lora_rank=4)
    first = runner.add_task(
        "sst2", DataSpec.from_folder(data_dir / "sst2", max_train=48, max_eval=32), train=train, options=options
    )
    first_sha = registry.bundle("sst2").sha256
    second = runner.add_task(
        "trec", DataSpec.from_folder(data_dir / "trec", max_train=48, max_eval=32), train=train, options=options
    )
    assert first is not None and second is not None
    assert second.proof["unchanged"] is True
    assert second.proof["before"]["bundle_files"] == {"sst2": first_sha} == second.proof["after"]["bundle_files"]
    assert registry.bundle("sst2").sha256 == first_sha == sha256_file(registry.bundle_path("sst2"))
    lora = LAYERS * 2 * 4 * (HIDDEN + HIDDEN)
    for name in ("sst2", "trec"):
        bundle = registry.bundle(name)
        assert bundle.param_counts["lora"] == lora
        assert bundle.config["task"]["lora"] == {"rank": 4, "alpha": 4.0, "dropout": 0.1, "targets": ["query", "value"]}
        assert registry.task(name).method == "lora"
    report = audit(Runner(registry, encoder=tiny_encoder_dir, progress=False))
    assert report.ok and [t.task for t in report.tasks] == ["sst2", "trec"]
    assert all(t.golden_equal and t.predictions_equal for t in report.tasks)
    probed = audit(Runner(registry, encoder=tiny_encoder_dir, progress=False), probe_only=True)
    assert probed.ok and all(t.probe_max_diff == 0 for t in probed.tasks)
    assert first.param_counts["total"] == lora + HIDDEN * 2 + 2
    assert f"LoRA {lora:,}, head 66 = {lora + 66:,}" in format_task_details(task_details(registry, "sst2"))
