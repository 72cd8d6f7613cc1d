"""Online EWC: the penalty is the Fisher-weighted squared distance to the anchor, the Fisher is the
mean squared mini-batch gradient, and its file round-trips and refuses what is not one."""

from __future__ import annotations

import pytest
import torch

from continual_adapters.core.baselines import BaselineModel
from continual_adapters.core.config import TaskSpec
from continual_adapters.core.errors import BundleError
from continual_adapters.training import ewc
from continual_adapters.training.ewc import (
    ElasticPenalty,
    ewc_penalty,
    fisher_bytes,
    fisher_diagonal,
    parse_fisher,
    shared_parameters,
)
from continual_adapters.training.loop import encode, pad_batch, task_loss


def test_the_penalty_is_the_fisher_weighted_squared_distance():
    params = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([[0.5]])}
    anchor = {"w": torch.tensor([0.0, 2.0, 1.0]), "b": torch.tensor([[1.5]])}
    fisher = {"w": torch.tensor([2.0, 7.0, 0.25]), "b": torch.tensor([[3.0]])}
    # by hand: 2*1^2 + 7*0^2 + 0.25*2^2 + 3*(-1)^2 = 2 + 0 + 1 + 3
    assert ewc_penalty(params, fisher, anchor).item() == pytest.approx(6.0)
    assert ewc_penalty(params, {}, {}).item() == 0.0
    assert ewc_penalty(anchor, fisher, anchor).item() == 0.0


@pytest.fixture
def naive(tiny_encoder_dir):
    model = BaselineModel.from_pretrained(tiny_encoder_dir, method="naive")
    model.add_task(TaskSpec("a", labels=("x", "y"), method="naive"))
    return model


def data(model, count=20):
    texts = [f"sentence number {i} is {'good' if i % 2 else 'bad'}" for i in range(count)]
    return encode(model.tokenizer, texts, None, [i % 2 for i in range(count)], 32, "classification")


def test_the_loss_adds_lambda_over_two_times_the_penalty(naive):
    train = data(naive)
    params = shared_parameters(naive, "a")
    assert params and all(name.startswith("encoder.") for name in params)
    anchor = {n: p.detach().clone() for n, p in params.items()}
    fisher = {n: torch.rand_like(p) for n, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.add_(0.01)
    naive.eval()
    batch = pad_batch(naive.tokenizer, train, [0, 1, 2], None)
    plain = task_loss(naive, "a", batch, train.targets[[0, 1, 2]])
    penalised = ElasticPenalty(params, fisher, anchor, weight=40.0).loss(
        naive, "a", [0, 1, 2], batch, train.targets[[0, 1, 2]]
    )
    expected = sum((fisher[n] * 0.01**2).sum() for n in fisher)
    assert penalised.item() == pytest.approx(plain.item() + 20.0 * expected.item(), rel=1e-4)
    with pytest.raises(BundleError, match="does not match"):
        ElasticPenalty(params, {"other": torch.zeros(1)}, {"other": torch.zeros(1)}, 1.0)


def test_the_fisher_is_the_mean_squared_minibatch_gradient(naive, monkeypatch):
    monkeypatch.setattr(ewc, "FISHER_EXAMPLES", 12)
    monkeypatch.setattr(ewc, "FISHER_BATCH", 4)
    train = data(naive)
    fisher = fisher_diagonal(naive, "a", train, seed=3)
    rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(3))[:12].tolist()
    params = shared_parameters(naive, "a")
    assert all(p.grad is None for p in params.values()), "no gradient is left behind"
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    naive.eval()
    for start in range(0, 12, 4):
        chunk = rows[start : start + 4]
        naive.zero_grad()
        task_loss(naive, "a", pad_batch(naive.tokenizer, train, chunk, None), train.targets[chunk]).backward()
        for n, p in params.items():
            if p.grad is not None:  # a module the forward never uses (a pooler) gets none
                expected[n] += p.grad.pow(2) / 3
    assert set(fisher) == set(params)
    for n in fisher:
        torch.testing.assert_close(fisher[n], expected[n])
    assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())


def test_fisher_files_round_trip_and_refuse_what_is_not_one():
    fisher = {"encoder.w": torch.tensor([[0.5, 0.0]]), "encoder.b": torch.tensor([1e-9])}
    back = parse_fisher(fisher_bytes("t", fisher, 1.0), "fisher of t")
    assert set(back) == set(fisher) and all(torch.equal(back[n], fisher[n]) for n in fisher)
    for bad in (b"", b"not a file", fisher_bytes("t", {"w": torch.tensor([-1.0])}, 1.0)):
        with pytest.raises(BundleError, match="^fisher of t"):
            parse_fisher(bad, "fisher of t")
    with pytest.raises(BundleError):
        parse_fisher(fisher_bytes("t", {"w": torch.tensor([float("nan")])}, 1.0), "x")
