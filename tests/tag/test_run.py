"""tag/run.py: a run directory reloads into the tagger training kept, with LoRA merged into the weights."""

from __future__ import annotations

import json
import shutil

import pytest

from data.conll import read_conll
from lora.inject import lora_modules
from tag.run import load_run
from tests.conll_data import needs_conll, records
from train.evaluation import tag_and_score
from train.run_dir import ADAPTER_DIR, RUN_FILE


@needs_conll
def test_merged_tagger_tags_as_the_one_with_separate_adapters(trained_run, conll_slice):
    sentences = read_conll(conll_slice / "valid.txt")
    results = {}
    for merge in (True, False):
        run = load_run(trained_run, device="cpu", merge=merge)
        assert all(m.merged == merge for _, m in lora_modules(run.tagger)) and not run.tagger.training
        results[merge] = tag_and_score(run.tagger, run.tokenizer, run.config, run.labels, sentences, run.device,
                                       run.bf16)
    assert results[True].tags == results[False].tags
    assert results[True].loss == pytest.approx(results[False].loss, rel=1e-4)
    best = max(records(trained_run, "eval"), key=lambda r: r["valid_mean_f1"])["valid_f1"]
    assert results[True].scores.f1 == results[False].scores.f1 == best  # the adapter kept is the best one


@needs_conll
def test_a_run_directory_that_is_not_one_is_a_clear_error(trained_run, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/{RUN_FILE}: not a run directory"):
        load_run(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    shutil.rmtree(copy / ADAPTER_DIR)
    with pytest.raises(FileNotFoundError, match=f"{copy / ADAPTER_DIR}: missing; the run has not finished") as error:
        load_run(copy)
    assert "older llama-ner" not in str(error.value)
    shutil.copytree(trained_run / ADAPTER_DIR, copy, dirs_exist_ok=True)  # the layout before adapter/ existed
    with pytest.raises(FileNotFoundError, match=f"older llama-ner, .* into {ADAPTER_DIR}/"):
        load_run(copy)
    info = json.loads((copy / RUN_FILE).read_text())
    info["config"]["packing"] = True  # a setting this version does not have
    (copy / RUN_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match=f"{copy / RUN_FILE}: not a run file of this version"):
        load_run(copy)
