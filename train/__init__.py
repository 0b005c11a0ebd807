"""Fitting a tagger: `python -m train` (make train).

config.py       TrainConfig, every setting of a run, and the command line; named recipes
build.py        the tagger a run trains: base checkpoint + head, LoRA injected (or every weight trainable)
device.py       where it runs and in which precision (shared with tag/ and bench/)
loop.py         set up, step, evaluate and keep the best, checkpoint
step.py         one optimizer step: forward/backward over micro-batches, clip, AdamW, schedule
evaluation.py   the evaluation pass: windows -> scores per word -> tags -> conlleval F1 (shared with tag/)
optim.py        AdamW, written out      schedule.py  warmup + cosine
checkpoint.py   resumable state         run_dir.py   the files of a run directory
distributed.py  torchrun: ranks, gradient sums, FSDP of the frozen base
curves.py       loss and F1 curves of a run (matplotlib)

May import model, lora and data; never tag or bench.
"""
