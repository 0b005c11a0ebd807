"""The peer the benchmarks measure us against: HF transformers + PEFT made bidirectional, with our LoRA."""

from __future__ import annotations

import pytest
import torch

from bench.systems import check_bidirectional, random_hf, with_lora
from model.config import LlamaConfig

CPU = torch.device("cpu")
SHAPE = LlamaConfig(vocab_size=101, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                    intermediate_size=48, rope_theta=10000.0, max_position_embeddings=64)


def peer(bf16: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return with_lora(random_hf(SHAPE, 9, CPU, torch.bfloat16 if bf16 else torch.float32), bf16)


def logits_of(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("padding", [False, True])
def test_a_token_sees_a_later_token(padding):
    # Unpadded, transformers may drop the mask altogether and lean on the kernel's causal flag: both ways covered.
    model = peer().eval()
    ids = torch.randint(0, SHAPE.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if padding:
        mask[1, 5:] = 0
    later = ids.clone()
    later[:, 4] = (ids[:, 4] + 1) % SHAPE.vocab_size  # a real token in both rows, after the ones we read
    before, after = logits_of(model, ids, mask), logits_of(model, later, mask)
    assert not torch.allclose(before[:, :4], after[:, :4], atol=1e-6), "the peer attends only backwards"
    # The check can fail: the same model made causal again does not see the later token.
    model.base_model.model.config.is_causal = True
    torch.testing.assert_close(logits_of(model, ids, mask)[:, :4], logits_of(model, later, mask)[:, :4])


def test_the_peer_has_our_lora_and_trains_only_it_and_the_head():
    model = peer(bf16=True)
    lora = {name.split(".lora_")[0] for name, _ in model.named_parameters() if ".lora_" in name}
    assert len(lora) == 7 * SHAPE.num_layers
    assert {name.rsplit(".", 1)[1] for name in lora} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"}
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.0)
    for name, p in model.named_parameters():
        trained = ".lora_" in name or "score.modules_to_save" in name
        assert p.requires_grad == trained, name
        assert p.dtype == (torch.float32 if trained else torch.bfloat16), name


@pytest.mark.parametrize("bf16", [False, True])
def test_a_causal_peer_is_refused(bf16):
    # bf16: a bf16 base with float32 adapters and head, run under autocast as on a GPU.
    model = peer(bf16).train()  # dropout on: the check must still see a causal model
    check_bidirectional(model, SHAPE.vocab_size, CPU, bf16)
    assert model.training
    model.base_model.model.config.is_causal = True  # as a transformers that ignored the flag would leave it
    with pytest.raises(RuntimeError, match="ignores config.is_causal = False"):
        check_bidirectional(model, SHAPE.vocab_size, CPU, bf16)
