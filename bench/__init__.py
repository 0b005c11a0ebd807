"""Benchmarks: speed and memory of training and tagging, measured in one run against a reference.

versus_hf.py  ours against HF transformers + PEFT on the embedded SmolLM2-135M, on this CPU   (make bench)
gpu.py        a Llama-3.2-1B-shaped tagger with random weights on one accelerator            (make bench-gpu)

May import every room; nothing imports bench but its tests.
"""
