"""Bring your own data: a short real run on made-up entity types (lower case, hyphenated, BIOES in training,
IOB2 in validation, no -DOCSTART-) whose evaluate, predict and merged export speak those labels."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import transformers

from data.conll import ConllFormatError
from tag import evaluate as evaluate_cli
from tag import load_tagger
from tag import predict as predict_cli
from tag.export import export_run
from train.config import TrainConfig
from train.loop import train

GADGETS = ["zorblax", "quindle", "frobnitz", "wuggle"]
PLACES = [["Port", "Vell"], ["Mbaleton"], ["Qurisk", "Bay"], ["Oxtown"]]
FRAMES = [("I", "bought", "a", "{g}", "in", "{p}", "."), ("the", "{g}", "from", "{p}", "broke", "."),
          ("{p}", "sells", "every", "{g}", "cheaply", "."), ("my", "{g}", "works", ".")]
LABELS = ["O", "B-gadget-2", "I-gadget-2", "B-place", "I-place"]


def sentence(rng: random.Random, bioes: bool) -> list[tuple[str, str]]:
    """One made-up sentence as (word, tag) pairs: a gadget is one word, a place one or two."""
    gadget, place = rng.choice(GADGETS), rng.choice(PLACES)
    rows = []
    for slot in rng.choice(FRAMES):
        if slot == "{g}":
            rows.append((gadget, "S-gadget-2" if bioes else "B-gadget-2"))
        elif slot == "{p}":
            tags = (["S-place"] if len(place) == 1 else ["B-place", "E-place"]) if bioes else \
                ["B-place"] + ["I-place"] * (len(place) - 1)
            rows.extend(zip(place, tags))
        else:
            rows.append((slot, "O"))
    return rows


def write(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in sentences))
    return path


@pytest.fixture(scope="module")
def own_data(tmp_path_factory) -> Path:
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("own")
    write(folder / "train.txt", [sentence(rng, bioes=True) for _ in range(64)])
    write(folder / "valid.txt", [sentence(rng, bioes=False) for _ in range(16)])
    return folder


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, own_data, smollm2_dir) -> Path:
    out = tmp_path_factory.mktemp("own_run")
    train(TrainConfig(model=str(smollm2_dir), data=str(own_data), out=str(out), batch_size=8, batch_tokens=None, max_steps=24,
                      lr=3e-3, subset_eval_every=None, train_eval_sentences=0))
    return out


def test_the_run_learns_and_keeps_the_data_labels(own_run):
    info = json.loads((own_run / "tagging.json").read_text())
    assert info["labels"] == LABELS
    best = [json.loads(line) for line in (own_run / "metrics.jsonl").read_text().splitlines()][-1]
    assert best["type"] == "eval" and set(best["valid_documents_per_type_f1"]) == {"gadget-2", "place"}
    assert best["valid_documents_f1"] > 90, best


def test_predict_and_evaluate_speak_the_labels(own_run, own_data, capsys):
    text = "my quindle from Port Vell broke ."  # seen words, in an order no frame has
    assert predict_cli.main(["--run", str(own_run), text]) == 0
    entities = json.loads(capsys.readouterr().out)["entities"]
    assert [(e["type"], e["text"]) for e in entities] == [("gadget-2", "quindle"), ("place", "Port Vell")]
    assert evaluate_cli.main(["--run", str(own_run), "--data", str(own_data / "valid.txt")]) == 0
    report = capsys.readouterr().out
    assert re.search(r"gadget-2: precision: +\d", report) and re.search(r"place: precision: +\d", report), report


def test_merged_export_loads_in_transformers_with_the_labels(own_run, tmp_path):
    out = export_run(own_run, tmp_path / "merged", "merged")
    model = transformers.AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {label: i for i, label in enumerate(LABELS)}


def test_a_validation_tag_the_run_never_saw_names_file_line_and_labels(own_data, smollm2_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text((own_data / "train.txt").read_text())
    write(data / "valid.txt", [[("a", "O"), ("zorblax", "B-gadget-2")], [("the", "O"), ("cat", "B-animal")]])
    config = TrainConfig(model=str(smollm2_dir), data=str(data), out=str(tmp_path / "run"), max_steps=1)
    message = f"{data / 'valid.txt'}:5: tag B-animal is not in the run's label set ({', '.join(LABELS)})"
    with pytest.raises(ConllFormatError, match=re.escape(message)):
        train(config)


def test_training_data_without_entities_is_refused(smollm2_dir, tmp_path):
    write(tmp_path / "train.txt", [[("just", "O"), ("words", "O")]])
    write(tmp_path / "valid.txt", [[("more", "O")]])
    config = TrainConfig(model=str(smollm2_dir), data=str(tmp_path), out=str(tmp_path / "run"), max_steps=1)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'train.txt'}: no entity tag in the training data")):
        train(config)


def test_a_two_word_text_alone_gets_its_entity(own_run):
    found, = load_tagger(own_run, device="cpu").tag(["my wuggle"])
    assert [(e.type, e.text) for e in found] == [("gadget-2", "wuggle")] and found[0].score > 0.5


def test_a_labels_file_fixes_the_order_and_the_training_file_is_read_against_it(own_data, smollm2_dir, tmp_path):
    order = ["B-place", "I-place", "O", "B-gadget-2", "I-gadget-2"]
    (tmp_path / "labels.txt").write_text("\n".join(order) + "\n")
    out = tmp_path / "run"
    train(TrainConfig(model=str(smollm2_dir), data=str(own_data), out=str(out), labels=str(tmp_path / "labels.txt"),
                      batch_size=8, batch_tokens=None, max_steps=2, subset_eval_every=None, train_eval_sentences=0))
    assert json.loads((out / "tagging.json").read_text())["labels"] == order
    (tmp_path / "labels.txt").write_text("O\nB-place\nI-place\n")
    message = re.escape(str(own_data / "train.txt")) + r":\d+: tag B-gadget-2 is not in the run's label set"
    with pytest.raises(ConllFormatError, match=message):
        train(TrainConfig(model=str(smollm2_dir), data=str(own_data), out=str(tmp_path / "other"),
                          labels=str(tmp_path / "labels.txt"), max_steps=1))
