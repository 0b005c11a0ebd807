"""Fixtures of the tag/ tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data.labels import LabelSet
from predictor.run_dir import save_tuned
from train.build import build_tagger
from train.config import TrainConfig
from train.run_dir import write_run_info


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model) -> Path:
    """A run directory of the tiny random model with CoNLL-2003's types and a random head, untrained: it tags in
    milliseconds and finds entities in most texts, so pages and the server can be checked against the API on it."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    config = TrainConfig(model=str(tiny_model), out=str(run_dir), device="cpu")
    tagger = build_tagger(config, 9, torch.device("cpu"))
    torch.manual_seed(0)
    with torch.no_grad():
        tagger.head.weight.normal_()
        tagger.head.bias.normal_()
    write_run_info(run_dir, config, LabelSet.from_types(["PER", "ORG", "LOC", "MISC"]), sources={})
    save_tuned(tagger, run_dir, config.finetune)
    return run_dir
