import copy
import math

import pytest
import torch
import torch.nn as nn

from train.optim import AdamW
from train.schedule import WarmupCosine, cosine_with_warmup


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def param_groups(model: nn.Module) -> list[dict]:
    """Three groups with their own lr / weight decay / betas, as a fine-tuning run might use;
    `peak_lr` is ours (param groups keep extra keys) and drives the lr changes in `train`."""
    first, last = model[0], model[2]
    return [
        {"params": [first.weight], "peak_lr": 3e-3, "weight_decay": 0.1},
        {"params": [first.bias, last.bias], "peak_lr": 2e-3, "weight_decay": 0.0},
        {"params": [last.weight], "peak_lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6},
    ]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    """Regression on fresh data every step; the lr of every group changes every step."""
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * (0.5 + 0.5 * math.cos(step / 17))
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()


def test_matches_torch_adamw_over_100_steps():
    ours_model, torch_model = make_model(), make_model()
    ours = AdamW(param_groups(ours_model), weight_decay=0.05)
    reference = torch.optim.AdamW(param_groups(torch_model), weight_decay=0.05, foreach=False)
    train(ours_model, ours, range(100))
    train(torch_model, reference, range(100))
    moved = False
    for p, q, p0 in zip(ours_model.parameters(), torch_model.parameters(), make_model().parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        moved |= not torch.allclose(p, p0, atol=1e-3)
    assert moved
    for p, q in zip(ours_model.parameters(), torch_model.parameters()):
        mine, theirs = ours.state[p], reference.state[q]
        expected_keys = {"step", "exp_avg", "exp_avg_sq"}
        assert set(mine) == set(theirs) == expected_keys
        assert mine["step"] == int(theirs["step"]) == 100
        for key in expected_keys - {"step"}:
            torch.testing.assert_close(mine[key], theirs[key], rtol=1e-6, atol=1e-9)


def test_weight_decay_is_decoupled():
    """With a zero gradient the Adam update is 0, so only p <- p * (1 - lr * wd) remains."""
    p = nn.Parameter(torch.tensor([2.0, -4.0]))
    optimizer = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.1 * 0.5))


def test_first_step_is_lr_times_sign():
    """Bias correction makes step 1 move every weight by lr * g / (|g| + eps) = lr * sign(g)."""
    p = nn.Parameter(torch.zeros(3))
    optimizer = AdamW([p], lr=0.01, weight_decay=0.0)
    p.grad = torch.tensor([3.0, -0.2, 1e-3])
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.01, 0.01, -0.01]), rtol=1e-4, atol=0)


def test_state_dict_round_trip_continues_identically():
    straight_model = make_model()
    straight = AdamW(param_groups(straight_model))
    train(straight_model, straight, range(100))

    model = make_model()
    optimizer = AdamW(param_groups(model))
    train(model, optimizer, range(50))
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())

    resumed_model = make_model()
    resumed_model.load_state_dict(saved_model)
    resumed = AdamW(param_groups(resumed_model))
    resumed.load_state_dict(saved_optimizer)
    train(resumed_model, resumed, range(50, 100))
    for p, q in zip(resumed_model.parameters(), straight_model.parameters()):
        assert torch.equal(p, q)


def test_closure_and_skipped_parameters():
    model = make_model()
    frozen = nn.Parameter(torch.ones(2))
    optimizer = AdamW([*model.parameters(), frozen])
    x = torch.randn(4, 6)

    def closure():
        optimizer.zero_grad()
        loss = model(x).pow(2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.item() > 0
    assert torch.equal(frozen, torch.ones(2)) and frozen not in optimizer.state


def test_rejects_bad_hyperparameters():
    params = [nn.Parameter(torch.zeros(1))]
    for kwargs, message in [({"lr": -1.0}, "learning rate"), ({"eps": -1.0}, "eps"),
                            ({"betas": (0.9, 1.0)}, "betas"), ({"weight_decay": -0.1}, "weight_decay")]:
        with pytest.raises(ValueError, match=message):
            AdamW(params, **kwargs)


# ---- schedule --------------------------------------------------------------------------------

def test_cosine_with_warmup_values():
    kwargs = dict(total_steps=110, warmup_steps=10, peak_lr=1e-3, min_lr=1e-4)
    assert cosine_with_warmup(0, **kwargs) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert cosine_with_warmup(4, **kwargs) == pytest.approx(5e-4)
    assert cosine_with_warmup(9, **kwargs) == pytest.approx(1e-3)  # end of warmup: the peak
    assert cosine_with_warmup(10, **kwargs) == pytest.approx(1e-3)
    assert cosine_with_warmup(60, **kwargs) == pytest.approx(5.5e-4)  # midpoint of the decay
    assert cosine_with_warmup(35, **kwargs) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_with_warmup(110, **kwargs) == pytest.approx(1e-4)  # the floor
    assert cosine_with_warmup(500, **kwargs) == pytest.approx(1e-4)  # and beyond
    decay = [cosine_with_warmup(s, **kwargs) for s in range(10, 111)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert cosine_with_warmup(0, total_steps=10, warmup_steps=0, peak_lr=1.0, min_lr=0.0) == 1.0


def test_cosine_with_warmup_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_with_warmup(0, total_steps=10, warmup_steps=10, peak_lr=1.0, min_lr=0.0)
    with pytest.raises(ValueError, match="min_lr"):
        cosine_with_warmup(0, total_steps=10, warmup_steps=2, peak_lr=1.0, min_lr=2.0)
    with pytest.raises(ValueError, match="step"):
        cosine_with_warmup(-1, total_steps=10, warmup_steps=2, peak_lr=1.0, min_lr=0.0)


def test_scheduler_sets_each_group_and_resumes():
    model = make_model()
    optimizer = AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                       {"params": model[2].parameters(), "lr": 1e-2}])
    scheduler = WarmupCosine(optimizer, total_steps=40, warmup_steps=5, min_lr_ratio=0.1)
    seen = [scheduler.current_lrs()]
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        seen.append(scheduler.current_lrs())
    for step, lrs in enumerate(seen):
        assert lrs == [pytest.approx(cosine_with_warmup(step, 40, 5, peak, peak / 10)) for peak in (1e-3, 1e-2)]

    # Resume: the new optimizer's groups start at the peaks from the config, then take the saved
    # (current) lrs from the optimizer state; the scheduler must still know the peaks.
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    resumed_optimizer = AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                               {"params": model[2].parameters(), "lr": 1e-2}])
    resumed_optimizer.load_state_dict(saved_optimizer)
    resumed = WarmupCosine(resumed_optimizer, total_steps=40, warmup_steps=5, min_lr_ratio=0.1)
    resumed.load_state_dict(saved_scheduler)
    assert resumed.current_lrs() == seen[-1]
    for _ in range(30):
        scheduler.step()
        resumed.step()
        assert resumed.current_lrs() == scheduler.current_lrs()
    assert resumed.current_lrs() == [pytest.approx(1e-4), pytest.approx(1e-3)]

    one_group = AdamW(model.parameters())
    with pytest.raises(ValueError, match="param groups"):
        WarmupCosine(one_group, total_steps=40, warmup_steps=5).load_state_dict(saved_scheduler)
