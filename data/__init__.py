"""NER data for the tagger: knows tokenizers, tags and label sets; of the model only IGNORE_INDEX and the
Tokenizer interface (imports model, no other room).

labels.py   the label set (IOB2) and IOB1 -> IOB2
conll.py    read / write CoNLL column files -> Sentence
align.py    Sentence -> Example (subword windows over documents or sentences) and predictions back to words
batching.py Example -> Batch (length buckets, seeded, sharded)
decode.py   label scores per word -> tags (Viterbi under IOB2 constraints, or argmax)
metrics.py  entity chunks and precision / recall / F1 as conlleval counts them
download.py fetch CoNLL-2003 as released (the archive the hub's conll2003 script reads); find the data directory
"""
