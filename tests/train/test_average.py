"""The moving average of the trained weights (train/average.py), against the average written out as a weighted sum
of every step's weights, and in a real run: it resumes exactly, is what the run keeps, and the last weights are
scored beside it."""

from __future__ import annotations

import pytest
import torch

from data.conll import read_conll
from tag.run import load_run
from tests.conll_data import needs_conll, records
from train.average import WeightAverage
from train.config import TrainConfig
from train.evaluation import tag_and_score
from train.loop import train
from train.run_dir import CHECKPOINT_FILE


def test_the_average_is_the_weighted_sum_of_every_steps_weights():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    average = WeightAverage([weight], decay=0.9)
    history = [weight.detach().clone()]
    for _ in range(40):
        with torch.no_grad():
            weight.add_(torch.randn_like(weight))
        history.append(weight.detach().clone())
        average.update()
    # The weight of step t in the average: (1 - d_t) times the decays of every later update; the start keeps the
    # product of all decays. d_t = min(0.9, t / (9 + t)) for the t-th update (t = 1, 2, ...).
    decays = [min(0.9, t / (9 + t)) for t in range(1, 41)]
    coefficients = []
    for t in range(41):
        later = 1.0
        for d in decays[t:]:
            later *= d
        coefficients.append(later if t == 0 else (1 - decays[t - 1]) * later)
    assert sum(coefficients) == pytest.approx(1.0)
    expected = sum(c * w for c, w in zip(coefficients, history))
    torch.testing.assert_close(average.average[0], expected, rtol=1e-12, atol=1e-12)
    assert average.step_decay() == pytest.approx(41 / 50)  # 0.9 only from the 80th update on


def test_swapped_in_puts_the_trained_weights_back_even_after_an_error():
    weight = torch.nn.Parameter(torch.zeros(2))
    average = WeightAverage([weight], decay=0.5)
    with torch.no_grad():
        weight.fill_(4.0)
    average.update()  # decay 1/10: the average moves 0.9 of the way
    with pytest.raises(RuntimeError), average.swapped_in():
        assert torch.allclose(weight, torch.full((2,), 3.6))
        raise RuntimeError("evaluation failed")
    assert torch.equal(weight, torch.full((2,), 4.0))


def test_a_saved_average_must_fit():
    average = WeightAverage([torch.nn.Parameter(torch.zeros(2))], decay=0.9)
    other = WeightAverage([torch.nn.Parameter(torch.zeros(3))], decay=0.9)
    with pytest.raises(ValueError, match="shape"):
        average.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([torch.nn.Parameter(torch.zeros(2))], decay=0.5).load_state_dict(average.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([], decay=1.0)


@needs_conll
def test_a_run_keeps_the_average_resumes_it_and_scores_the_last_weights(tiny_model, conll_slice, tmp_path):
    settings = dict(model=str(tiny_model), data=str(conll_slice), window="sentence", limit=64, batch_size=8,
                    batch_tokens=None, epochs=2, lr=1e-2, eval_every=8, checkpoint_every=3, average_decay=0.9,
                    subset_eval_every=None, train_eval_sentences=0)
    whole = TrainConfig(out=str(tmp_path / "whole"), **settings)
    best = train(whole)

    parted = TrainConfig(out=str(tmp_path / "parted"), **settings)

    def kill_at_step_5(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt  # after the checkpoint of step 3

    with pytest.raises(KeyboardInterrupt):
        train(parted, on_step=kill_at_step_5)
    train(parted)
    saved = [torch.load(tmp_path / run / CHECKPOINT_FILE, weights_only=False)["average"] for run in ("whole", "parted")]
    assert saved[0]["updates"] == saved[1]["updates"] == 16
    for a, b in zip(saved[0]["average"], saved[1]["average"]):
        assert torch.equal(a, b)

    evals, last = records(tmp_path / "whole", "eval"), records(tmp_path / "whole", "eval_last")
    assert [r["step"] for r in evals] == [8, 16] and [r["step"] for r in last] == [16]
    assert last[0]["valid_loss"] != evals[-1]["valid_loss"]  # the average is not the last weights
    # What the run kept is the average: reloaded, it reproduces the averaged evaluation's loss.
    run = load_run(tmp_path / "whole", merge=False)
    sentences = read_conll(conll_slice / "valid.txt")
    result = tag_and_score(run.tagger, run.tokenizer, run.config, run.labels, sentences, run.device, bf16=False)
    assert result.loss == pytest.approx(best["valid_loss"], rel=1e-6)
