"""Using a trained tagger: the Python API (tag/tagger.py: `load_tagger(run_dir).tag(texts)` gives scored
entities), load a run (tag/run.py; optionally with int8 matmuls on a CPU, tag/quantize.py), score it on a CoNLL
file (tag/evaluate.py), tag text or CoNLL files (tag/predict.py; raw text is split into words as CoNLL-2003 splits
them, tag/words.py), show entities as HTML pages (tag/html.py), export it for Hugging Face users
(tag/export.py), and serve it over HTTP (tag/serve.py, concurrent requests gathered into model calls by
tag/batcher.py).

Built on the predictor that training evaluates with (predictor/): tagging never needs the training package.
May import model, lora, data and predictor, never train; nothing imports tag but bench and tests.
"""

from tag.tagger import Entity, EntityTagger, load_tagger

__all__ = ["Entity", "EntityTagger", "load_tagger"]
