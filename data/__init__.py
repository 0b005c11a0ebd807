"""CoNLL data for the tagger: knows tokenizers and tags, never the model.

labels.py   the label set (IOB2) and IOB1 -> IOB2
conll.py    read / write CoNLL column files -> Sentence
align.py    Sentence -> Example (subword windows, document context) and predictions back to words
decode.py   label scores per word -> tags (Viterbi under IOB2 constraints, or argmax)
batching.py Example -> Batch (length buckets or packing, seeded, sharded)
download.py fetch CoNLL-2003 from the Hugging Face hub; find the data directory
"""
