"""Random non-zero LoRA B and head for an untrained tagger, so that its predictions vary (tests only)."""

import torch

from lora.inject import lora_modules


@torch.no_grad()
def randomize_tuned(tagger: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for _, module in lora_modules(tagger):
        module.lora_B.normal_(std=0.2)
    tagger.head.weight.normal_()
    tagger.head.bias.normal_()
