"""Benchmarks: speed and memory of training and tagging, measured in one run against a reference.

versus_hf.py     ours against HF transformers + PEFT on the embedded SmolLM2-135M, on this CPU   (make bench)
gpu.py           ours against HF + PEFT with random weights of real shapes on one accelerator   (make bench-gpu)
gpu_session.sh   every GPU measurement of one session, ended before a deadline, one table
systems.py       the two systems compared: ours and HF + PEFT, built, trained a step, tagging
host.py          what a step costs the host: operators dispatched, waits for the GPU
tagging.py       tagging raw texts: our API and predict against the transformers pipeline
eval_batches.py  evaluation speed by padded-token budget per batch, the results checked equal
confidence.py    do the entity scores rank: precision by score band and AUROC
flops.py         model FLOPs and the matmul ceiling, for the MFU of the others
timing.py        the clock: warm-up off it, a GPU waited for at both ends
emulated_bf16.py python -m train in bf16 numerics on a CPU without bf16 instructions, at float32's speed

May import every room; nothing imports bench but its tests.
"""
