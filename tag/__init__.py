"""Using a trained tagger: load a run (tag/run.py), score it on a CoNLL file (tag/evaluate.py), tag text or CoNLL
files (tag/predict.py; raw text is split into words as CoNLL-2003 splits them, tag/words.py), and export it for
Hugging Face users (tag/export.py).

May import model, lora, data and train (for a run's settings and the evaluation pass it shares with training);
nothing imports tag but bench and tests.
"""
