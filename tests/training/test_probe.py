"""Probes: recorded and replayed the same way they are bit-identical; any change to a task shows.

Tiny random BERTs (with the real MiniLM tokenizer, `tiny_encoder_dir`) run the real code. Every
task's modules are perturbed away from their near-identity init, so that adapters, LayerNorm
copies and heads all matter to the logits a probe records.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from continual_adapters.core.config import AdapterConfig, TaskSpec
from continual_adapters.core.errors import ConfigError, DataError, TaskNotFoundError
from continual_adapters.core.model import ContinualModel
from continual_adapters.training.loop import Encoded, encode, evaluate
from continual_adapters.training.probe import (
    CROSS_DEVICE_TOLERANCE,
    PROBE_ROWS,
    PROBE_TOKENS,
    PROBE_WIDTH_MULTIPLE,
    Probe,
    build_probe,
    check,
    device_kind,
    parse_probe,
    probe_bytes,
    replay,
    select_rows,
    shorten,
)

WORDS = "the a movie plot was great awful fun why what where who is capital of france dull acting bright".split()


def texts(seed: int, count: int, longest: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(count)]


def encoded(model: ContinualModel, items: list[str]) -> Encoded:
    return encode(model.tokenizer, items, None, [0] * len(items), 128, "classification")


def add(model: ContinualModel, name: str, labels: int = 3, seed: int = 0) -> None:
    torch.manual_seed(seed)
    modules = model.add_task(
        TaskSpec(name, labels=tuple(f"l{i}" for i in range(labels)), adapter=AdapterConfig(bottleneck=8))
    )
    with torch.no_grad():
        for param in modules.parameters():
            param.add_(0.2 * torch.randn_like(param))


#: name, labels, number of evaluation rows, longest text in words. Every other probe is cut at 64 tokens
#: instead of PROBE_TOKENS, as probes recorded before the cut were: several widths occur.
TASKS = [("t1", 3, 20, 6), ("t2", 3, 5, 40), ("t3", 2, 1, 4), ("t4", 4, 12, 25), ("t5", 2, 9, 3), ("t6", 5, 30, 50)]


def six_tasks(folder: str) -> ContinualModel:
    made = ContinualModel.from_pretrained(folder).eval()
    for seed, (name, labels, _, _) in enumerate(TASKS):
        add(made, name, labels, seed)
    return made


@pytest.fixture(scope="module")
def model(tiny_encoder_dir) -> ContinualModel:
    """Shared by the tests that leave it as it is; those that change a model take `fresh`."""
    return six_tasks(tiny_encoder_dir)


@pytest.fixture
def fresh(tiny_encoder_dir) -> ContinualModel:
    """Another model loaded like `model`: probes recorded on one instance are checked on another."""
    return six_tasks(tiny_encoder_dir)


@pytest.fixture(scope="module")
def probes(model) -> dict[str, Probe]:
    return {
        name: build_probe(
            model, name, encoded(model, texts(seed, rows, longest)), tokens=64 if seed % 2 else PROBE_TOKENS
        )
        for seed, (name, _, rows, longest) in enumerate(TASKS)
    }


# (a) build, then check


def test_a_probe_checks_bit_identical_right_after_it_is_built(model, probes):
    probe = probes["t1"]
    assert probe.input_ids.shape == probe.attention_mask.shape == probe.token_type_ids.shape
    assert probe.rows == PROBE_ROWS and probe.input_ids.shape[1] % PROBE_WIDTH_MULTIPLE == 0
    assert probe.logits.shape == (PROBE_ROWS, 3) and probe.logits.dtype == torch.float32
    assert (probe.device, probe.dtype, probe.pad_token_id) == (
        device_kind(model.device),
        "float32",
        model.tokenizer.pad_token_id,
    )
    assert probe.device == "cpu_" + torch.backends.cpu.get_cpu_capability().lower()
    [verdict] = check(model, [probe])
    assert verdict.ok and verdict.max_abs_diff == 0.0 and verdict.task == "t1"
    assert "bit-identical" in verdict.reason


def test_long_rows_are_cut_to_probe_tokens_keeping_their_last_token(model):
    data = encoded(model, texts(3, 6, 60))
    assert max(len(f["input_ids"]) for f in data.features) > PROBE_TOKENS
    probe = build_probe(model, "t1", data)
    assert probe.input_ids.shape == (PROBE_ROWS, PROBE_TOKENS)
    for row, feature in zip(probe.input_ids.tolist(), data.features, strict=False):
        length = min(len(feature["input_ids"]), PROBE_TOKENS)
        assert row[:length] == [*feature["input_ids"][: length - 1], feature["input_ids"][-1]]
        assert row[length - 1] == model.tokenizer.sep_token_id
    assert shorten({"input_ids": [1, 2, 3]}, 2) == {"input_ids": [1, 3]}
    assert shorten({"input_ids": [1, 2]}, 2) == {"input_ids": [1, 2]}
    [verdict] = check(model, [probe])
    assert verdict.ok and verdict.max_abs_diff == 0.0


def test_probe_logits_are_the_tasks_evaluation_logits(model):
    """The probe records what evaluation computes (up to batching order in the last bits)."""
    data = encoded(model, texts(0, 20, 6))
    probe = build_probe(model, "t1", data)
    expected = evaluate(model, "t1", data).logits[:PROBE_ROWS]
    torch.testing.assert_close(probe.logits, expected, rtol=0, atol=1e-5)


# (b) mixed batches


def test_mixed_batches_in_any_order_and_size_replay_bit_identical(model, probes):
    widths = {int(p.input_ids.shape[1]) for p in probes.values()}
    assert len(widths) >= 2  # the batching by width is exercised
    rng = random.Random(7)
    for tasks_per_batch in (1, 2, 4, 16):
        order = list(probes.values())
        rng.shuffle(order)
        live = replay(model, order, tasks_per_batch=tasks_per_batch)
        for name, probe in probes.items():
            assert torch.equal(live[name], probe.logits), (name, tasks_per_batch, [p.task for p in order])
    assert all(v.ok and v.max_abs_diff == 0.0 for v in check(model, list(probes.values())[::-1]))


def test_a_subset_of_probes_replays_the_same_as_all_of_them(model, probes):
    """Which other tasks share the batch does not matter."""
    for names in (["t1", "t4"], ["t4", "t6", "t1"], ["t6"]):
        live = replay(model, [probes[n] for n in names])
        assert all(torch.equal(live[n], probes[n].logits) for n in names)


def test_batches_hold_whole_probes_of_one_width_never_widened(model, probes, monkeypatch):
    calls = []
    original = model.forward_mixed

    def spy(input_ids, attention_mask, token_type_ids=None, *, tasks):
        calls.append((tuple(input_ids.shape), list(tasks)))
        return original(input_ids, attention_mask, token_type_ids, tasks=tasks)

    monkeypatch.setattr(model, "forward_mixed", spy)
    replay(model, list(probes.values()), tasks_per_batch=2)
    seen = []
    for (rows, width), tasks in calls:
        names = list(dict.fromkeys(tasks))
        assert len(names) <= 2 and rows == sum(probes[n].rows for n in names)
        assert all(probes[n].input_ids.shape[1] == width for n in names)
        seen += names
    assert sorted(seen) == sorted(probes)  # each probe in exactly one batch


# (c) what a check catches


def nudge_adapter(model: ContinualModel) -> None:
    model.task_modules("t4").adapters[1].up.weight.data[0, 0] += 1e-3


def nudge_base(model: ContinualModel) -> None:
    model.encoder.encoder.layer[1].intermediate.dense.weight.data[3, 5] += 1e-3


def nudge_norm(model: ContinualModel) -> None:
    model.task_modules("t4").norms[2].bias.data[0] += 1e-3


def swap_routes(model: ContinualModel) -> None:
    """A routing leak: t1 and t2 (3 labels each) answer with each other's modules."""
    t1, t2 = model.tasks["t1"], model.tasks["t2"]
    model.tasks["t1"], model.tasks["t2"] = t2, t1


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        (nudge_adapter, {"t4"}),
        (nudge_norm, {"t4"}),
        (nudge_base, {name for name, *_ in TASKS}),
        (swap_routes, {"t1", "t2"}),
    ],
    ids=["adapter", "layernorm", "base-weight", "routing"],
)
def test_an_in_memory_change_is_caught_and_only_where_it_is(fresh, probes, tamper, broken):
    assert all(v.ok for v in check(fresh, list(probes.values())))
    tamper(fresh)
    verdicts = {v.task: v for v in check(fresh, list(probes.values()))}
    assert {name for name, v in verdicts.items() if not v.ok} == broken
    assert all(verdicts[name].max_abs_diff > 0 for name in broken)
    assert all(v.max_abs_diff == 0.0 for name, v in verdicts.items() if name not in broken)


def test_modules_of_another_label_count_fail_without_crashing(fresh, probes):
    fresh.tasks["t1"], fresh.tasks["t4"] = fresh.tasks["t4"], fresh.tasks["t1"]
    verdicts = {v.task: v for v in check(fresh, [probes["t1"], probes["t4"]])}
    assert not verdicts["t1"].ok and verdicts["t1"].max_abs_diff == float("inf")
    assert "shape" in verdicts["t4"].reason


def test_tolerances_across_devices_and_when_given(model, probes):
    probe = probes["t1"]
    off = replace(probe, logits=probe.logits + 1e-4)
    assert not check(model, [off])[0].ok  # same device and precision: bit identity
    assert check(model, [off], tolerance=1e-3)[0].ok
    assert not check(model, [off], tolerance=1e-5)[0].ok
    elsewhere = replace(off, device="cuda")
    assert CROSS_DEVICE_TOLERANCE > 1e-4 and check(model, [elsewhere])[0].ok
    assert not check(model, [replace(elsewhere, logits=probe.logits + 2 * CROSS_DEVICE_TOLERANCE)])[0].ok
    with pytest.raises(ConfigError):
        check(model, [probe], tolerance=float("nan"))


def test_replay_refuses_absent_tasks_duplicates_and_foreign_ids(fresh, probes):
    model = fresh
    model.remove_task("t2")
    with pytest.raises(TaskNotFoundError):
        replay(model, [probes["t1"], probes["t2"]])
    with pytest.raises(ConfigError, match="two probes"):
        replay(model, [probes["t1"], probes["t1"]])
    ids = probes["t1"].input_ids.clone()
    ids[0, 0] = model.encoder.config.vocab_size
    with pytest.raises(ConfigError, match="vocabulary"):
        replay(model, [replace(probes["t1"], input_ids=ids)])
    with pytest.raises(ConfigError):
        replay(model, [probes["t1"]], tasks_per_batch=0)


def test_replay_restores_training_mode(fresh, probes):
    model = fresh
    model.train()
    replay(model, [probes["t1"]])
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    replay(model, [probes["t1"]])
    assert not any(m.training for m in model.modules())


# (d) bytes


def test_bytes_round_trip_exactly_and_deterministically(model, probes):
    for probe in (probes["t2"], replace(probes["t5"], token_type_ids=None)):
        data = probe_bytes(probe)
        assert probe_bytes(probe) == data
        back = parse_probe(data, "probe.safetensors")
        assert (back.task, back.device, back.dtype, back.pad_token_id) == (
            probe.task,
            probe.device,
            probe.dtype,
            probe.pad_token_id,
        )
        for key in ("input_ids", "attention_mask", "token_type_ids", "logits"):
            mine, theirs = getattr(probe, key), getattr(back, key)
            assert (mine is None and theirs is None) or (torch.equal(mine, theirs) and mine.dtype == theirs.dtype)
        assert probe_bytes(back) == data
    rebuilt = build_probe(model, "t2", encoded(model, texts(1, 5, 40)), tokens=64)
    assert probe_bytes(rebuilt) == probe_bytes(probes["t2"])  # the same task, the same bytes
    assert check(model, [parse_probe(probe_bytes(probes["t2"]), "x")])[0].ok


def test_probe_bytes_refuses_what_parse_would_refuse(probes):
    with pytest.raises(ConfigError, match="NaN"):
        probe_bytes(replace(probes["t1"], logits=probes["t1"].logits * float("nan")))


# (f) rows


def test_a_one_row_split_gets_a_two_row_probe(model, probes):
    probe = probes["t3"]  # its evaluation split has one row
    assert probe.rows == 2 and torch.equal(probe.input_ids[0], probe.input_ids[1])
    # One input in two rows of a batch: equal up to the kernels' row blocking (bit-equal on some
    # CPUs, 3e-8 apart on an AVX-512 one). The replay below is bit-identical either way.
    assert torch.allclose(probe.logits[0], probe.logits[1], rtol=0, atol=1e-6)
    assert check(model, [probe])[0].ok


def test_select_rows_takes_the_first_rows(model):
    assert select_rows(encoded(model, texts(0, 20, 5))) == list(range(PROBE_ROWS))
    assert select_rows(encoded(model, texts(0, 3, 5)), rows=8) == [0, 1, 2]
    assert select_rows(encoded(model, texts(0, 1, 5))) == [0, 0]
    assert select_rows(encoded(model, texts(0, 20, 5)), rows=2) == [0, 1]
    with pytest.raises(ConfigError):
        select_rows(encoded(model, texts(0, 5, 5)), rows=1)
    with pytest.raises(DataError):
        select_rows(Encoded([], torch.tensor([])))


def test_probes_run_on_one_cpu_thread_and_the_thread_count_is_restored(model, probes, monkeypatch):
    """Multi-threaded CPU GEMMs split their sums by the batch's shape, so a row's logits would depend
    on which other probes share its batch; replaying on one thread keeps them bit-identical."""
    seen = []
    forward = model.forward_mixed

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward_mixed", counting)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        verdicts = check(model, list(probes.values()))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        assert all(v.ok for v in verdicts)
    finally:
        torch.set_num_threads(before)
