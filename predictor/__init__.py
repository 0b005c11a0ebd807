"""What training and tagging share, below both, so that tagging (and a server on top of it) needs nothing of
training:

predictor.py    Predictor: a tagger with its tokenizer, labels, tagging settings and device; sentences -> windows
                -> label scores per word -> tags -> conlleval scores
settings.py     TaggingSettings: what a trained tagger is and how it tags (saved in a run as tagging.json)
build.py        the base checkpoint with a classification head, in the precision the device runs
device.py       where a tagger runs and in which precision: the one policy of training, tagging and benchmarks
run_dir.py      the part of a run directory that tagging reads: tagging.json and the tuned weights

May import model, lora and data; train and tag import it, it imports neither.
"""
