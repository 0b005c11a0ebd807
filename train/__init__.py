"""Fitting a tagger: `python -m train` (make train).

config.py       TrainConfig, every setting of a run, and the command line; named recipes
build.py        the tagger a run trains: base checkpoint + head, LoRA injected (or every weight trainable)
loop.py         set up, step, evaluate and keep the best, checkpoint
step.py         one optimizer step: forward/backward over micro-batches, clip, AdamW, schedule
optim.py        AdamW, written out      schedule.py  warmup + cosine
checkpoint.py   resumable state         run_dir.py   the files of a run directory that training alone reads
distributed.py  torchrun: ranks, gradient sums, FSDP of the frozen base, evaluation shared by the ranks
curves.py       loss and F1 curves of a run (matplotlib)

Evaluations tag through the predictor that `tag/` uses too (predictor/).

May import model, lora, data and predictor; never tag or bench.
"""
