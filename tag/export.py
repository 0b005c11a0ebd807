"""Hand a trained run to Hugging Face users, in one of two layouts.

    python -m tag.export --run RUN_DIR --out DIR --format peft|merged [--model BASE_DIR] [--force]

peft     adapter_config.json + adapter_model.safetensors in PEFT's own format: LoRA on the same projections
         plus the head as a "module to save", applied by `PeftModel.from_pretrained` to the untouched base
         checkpoint loaded as `LlamaForTokenClassification`. Small; needs the base checkpoint.
merged   a complete `LlamaForTokenClassification` checkpoint: config.json, model.safetensors with every LoRA
         update folded into its weight (W + (alpha / r) B A, Hu et al. 2021, sec. 4.1), the base's tokenizer
         files. Loads with transformers alone.

Both folders get a README.md with the snippet that loads them. Bidirectional attention reaches transformers
as `is_causal=False` (transformers 5 reads it from the config). A causal run with bidirectional top layers has
no such setting there, so it is refused rather than exported into a model that computes something else.

Key names follow what PEFT 0.21 writes for `LlamaForTokenClassification` (base model under `model.`, head
named `score`, every key under `base_model.model.`); `tests/tag/test_export.py` loads both layouts with
transformers + peft and checks the logits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from lora.inject import lora_modules
from lora.io import adapter_config, read_adapter_config
from model.files import atomic_folder, current_folder, read_json
from predictor.predictor import Predictor
from predictor.run_dir import ADAPTER_DIR
from predictor.settings import TaggingSettings
from tag.run import load_run

FORMATS = ("peft", "merged")
PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the wrapped transformers model
MERGED_CONFIG_NAME = "config.json"
MERGED_WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")
EXPORT_FILES = ("README.md", PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, MERGED_CONFIG_NAME, MERGED_WEIGHTS_NAME,
                *TOKENIZER_FILES)  # all an export writes: --force replaces a folder of these files only
# Our module names -> LlamaForTokenClassification's: the backbone sits under `model.`, the head is `score`.
HF_MODULE_PREFIXES = {"backbone.": "model.", "head.": "score."}
HF_HEAD = "score"


class ExportError(ValueError):
    """A run that cannot be exported as asked (the message says why)."""


def check_expressible(settings: TaggingSettings) -> None:
    """Refuse runs whose attention pattern transformers' Llama cannot reproduce."""
    if settings.causal and settings.bidirectional_top_layers > 0:
        raise ExportError(
            f"the run uses causal attention with bidirectional_top_layers={settings.bidirectional_top_layers}: "
            "transformers' Llama has one `is_causal` switch for all layers, so no transformers model computes "
            "what this tagger computes; use tag.predict with the run directory instead"
        )


def hf_key(key: str) -> str:
    """`backbone.layers.0.mlp.up_proj.weight` -> `model.layers.0.mlp.up_proj.weight`; `head.bias` -> `score.bias`."""
    for ours, theirs in HF_MODULE_PREFIXES.items():
        if key.startswith(ours):
            return theirs + key.removeprefix(ours)
    raise ExportError(f"tensor {key!r} belongs to no module LlamaForTokenClassification has")


def peft_state_dict(tagger: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LoRA A/B of every adapted projection and the head, under the keys `PeftModel.save_pretrained` writes."""
    state: dict[str, torch.Tensor] = {}
    for name, module in lora_modules(tagger):
        for matrix in ("lora_A", "lora_B"):  # A (r, in), B (out, r): PEFT's nn.Linear weights have the same layout
            state[f"{PEFT_PREFIX}{hf_key(name)}.{matrix}.weight"] = getattr(module, matrix).detach().float()
    for key, tensor in tagger.head.state_dict().items():
        state[f"{PEFT_PREFIX}{HF_HEAD}.{key}"] = tensor.detach().float()
    return {k: v.contiguous() for k, v in state.items()}


def peft_config(run_dir: Path, base: Path) -> dict:
    """PEFT's `LoraConfig` fields for this run's adapter; the fields left out keep PEFT's defaults."""
    adapter = read_adapter_config(current_folder(run_dir / ADAPTER_DIR))
    if adapter.extra != ("head",):
        raise ExportError(f"{run_dir / ADAPTER_DIR / PEFT_CONFIG_NAME}: the adapter trains {list(adapter.extra)} "
                          "besides LoRA; the PEFT export maps only the head (use --format merged)")
    return {
        "peft_type": "LORA",
        "task_type": "TOKEN_CLS",
        "base_model_name_or_path": str(base),
        "r": adapter.r,
        "lora_alpha": adapter.alpha,
        "lora_dropout": adapter.dropout,
        "target_modules": list(adapter.targets),
        "modules_to_save": [HF_HEAD],
        "bias": "none",
        "fan_in_fan_out": False,  # the projections are nn.Linear, weight (out, in), not GPT-2 Conv1D (in, out)
        "use_rslora": False,  # scaling is alpha / r, not alpha / sqrt(r)
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }


@torch.no_grad()
def merged_state_dict(tagger: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the tagger under LlamaForTokenClassification's keys, LoRA folded in, in float32.

    The merge is computed beside the model (W + delta into a new tensor), so the tagger itself is unchanged.
    `lm_head` is left out: a token classifier has none (with tied embeddings it is `embed_tokens` anyway).
    """
    folded = {}
    for name, module in lora_modules(tagger):
        if module.merged:
            raise ExportError(f"{name} is already merged; export a tagger with separate LoRA weights")
        folded[f"{name}.weight"] = module.weight.float() + module.delta_weight()  # (out, in)
    skipped = {f"{name}.{matrix}" for name, _ in lora_modules(tagger) for matrix in ("lora_A", "lora_B")}
    skipped.add("backbone.lm_head.weight")
    return {
        hf_key(key): folded.get(key, tensor).float().contiguous()
        for key, tensor in tagger.state_dict().items()
        if key not in skipped
    }


def merged_config(base: Path, settings: TaggingSettings, labels: list[str]) -> dict:
    """The base checkpoint's config.json, turned into a float32 token classifier with our labels."""
    hf = read_json(base / MERGED_CONFIG_NAME)
    for stale in ("torch_dtype", "transformers_version"):
        hf.pop(stale, None)
    hf.update(
        architectures=["LlamaForTokenClassification"],
        dtype="float32",
        num_labels=len(labels),
        id2label={str(i): label for i, label in enumerate(labels)},
        label2id={label: i for i, label in enumerate(labels)},
        is_causal=settings.causal,
        classifier_dropout=settings.head_dropout,
    )
    return hf


def readme(fmt: str, out: Path, base: Path, predictor: Predictor) -> str:
    """A short README whose Python block loads the export (tests/tag/test_export.py runs that block)."""
    settings, labels = predictor.settings, list(predictor.labels)
    if fmt == "peft":
        # transformers takes `is_causal` as a from_pretrained keyword only when the config already has the field,
        # and a causal base's config.json does not: set it on the config object instead.
        bidirectional = "" if settings.causal else \
            "config.is_causal = False  # bidirectional attention, as in training\n"
        code = f"""from peft import PeftModel
from transformers import AutoConfig, AutoTokenizer, LlamaForTokenClassification

labels = {list(labels)!r}
config = AutoConfig.from_pretrained(
    {str(base)!r},
    num_labels=len(labels),
    id2label=dict(enumerate(labels)),
    label2id={{label: i for i, label in enumerate(labels)}},
)
{bidirectional}base_model = LlamaForTokenClassification.from_pretrained({str(base)!r}, config=config)
model = PeftModel.from_pretrained(base_model, {str(out)!r}).eval()
tokenizer = AutoTokenizer.from_pretrained({str(base)!r})
"""
        adapter = adapter_config(predictor.tagger)
        what = f"A PEFT LoRA adapter (r={adapter.r}, alpha={adapter.alpha:g}) plus the classification head " \
               f"(`score`) for the base checkpoint `{base}`."
    else:
        code = f"""from transformers import AutoTokenizer, LlamaForTokenClassification

model = LlamaForTokenClassification.from_pretrained({str(out)!r}).eval()
tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
"""
        tuned = "fully fine-tuned" if settings.finetune == "full" else "with the LoRA update merged into its weights"
        what = f"A complete `LlamaForTokenClassification` checkpoint (float32): the base `{base}` {tuned}, " \
               "the classification head as `score`, and the base's tokenizer."
    attention = ("causal (the decoder's own mask)" if settings.causal else
                 "bidirectional: `is_causal=False`, which transformers 5 reads; a version that ignores it runs "
                 "causal attention and gives different predictions")
    bos = "the BOS token, then " if settings.add_bos else ""
    return f"""# llama-ner tagger ({fmt} export)

{what}

```python
{code}```

- Labels (IOB2): {", ".join(labels)}.
- Attention: {attention}.
- Input as in training: {bos}the words encoded as `" " + " ".join(words)`; each word's label is read at
  its first sub-token.
"""


def export_run(
    run_dir: str | Path, out: str | Path, fmt: str, model: str | Path | None = None, force: bool = False
) -> Path:
    """Write the `fmt` export of `run_dir` to `out` (see the module docstring) and return `out`.

    `model` overrides the base checkpoint folder recorded in the run. The folder appears complete or not at all:
    it is written beside `out` and renamed into place (model/files.py). `out` may be new or empty; `force` lets
    it replace an earlier export (of either format), never anything else: a user who types a wrong `--out` (the
    run itself, the folder of all runs, the checkout) with `--force` expects an export or an error, not the loss
    of what is there, so a folder holding anything but an export's files is refused and left as it is.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    run_dir, out = Path(run_dir), Path(out).absolute()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory not found")
    check_out(run_dir, out, force)

    run = load_run(run_dir, device="cpu", model=None if model is None else str(model), merge=False)
    check_expressible(run.settings)
    if fmt == "peft" and run.settings.finetune == "full":
        raise ExportError(f"{run_dir} was fully fine-tuned (--finetune full): it has no LoRA adapter to export "
                          f"for PEFT; use --format merged")
    base = Path(run.settings.model).absolute()
    with atomic_folder(out, EXPORT_FILES) as tmp:
        write_export(run, run_dir, fmt, base, tmp, out)
    return out


def check_out(run_dir: Path, out: Path, force: bool) -> None:
    """Refuse an `out` the export must not replace (see `export_run`), before any work is done."""
    run = run_dir.resolve()
    if out.resolve() == run or out.resolve() in run.parents:
        what = "is" if out.resolve() == run else "holds"
        raise ExportError(f"{out} {what} the run directory {run_dir}; choose a new folder for the export")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_export(out):
        raise FileExistsError(f"{out}: folder is not empty and not a llama-ner export, so even --force leaves it; "
                              f"choose a new folder")
    if not force:
        raise FileExistsError(f"{out}: folder is not empty; pass --force to replace it")


def is_export(folder: Path) -> bool:
    """True for a folder holding a whole export of either format and nothing else."""
    names = {p.name for p in folder.iterdir() if p.is_file()}
    whole = {"README.md", PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME} <= names or \
        {"README.md", MERGED_CONFIG_NAME, MERGED_WEIGHTS_NAME} <= names
    return whole and {p.name for p in folder.iterdir()} <= set(EXPORT_FILES)


def write_export(run: Predictor, run_dir: Path, fmt: str, base: Path, folder: Path, final: Path) -> None:
    """Fill `folder` with the export; `final` is where it will live (the README names it)."""
    if fmt == "peft":
        config = peft_config(run_dir, base)
        save_file(peft_state_dict(run.tagger), folder / PEFT_WEIGHTS_NAME, metadata={"format": "pt"})
        (folder / PEFT_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    else:
        config = merged_config(base, run.settings, list(run.labels))
        save_file(merged_state_dict(run.tagger), folder / MERGED_WEIGHTS_NAME, metadata={"format": "pt"})
        (folder / MERGED_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        for name in TOKENIZER_FILES:
            if (base / name).exists():
                shutil.copy2(base / name, folder / name)
    (folder / "README.md").write_text(readme(fmt, final, base, run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tag.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m train`")
    parser.add_argument("--out", required=True,
                        help="folder to write (created; must be empty, or an earlier export with --force)")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                        help="peft: adapter for the base checkpoint; merged: complete checkpoint")
    parser.add_argument("--model", help="base checkpoint folder, if it moved since training")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier export at --out (a folder holding anything else is never replaced)")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.run, args.out, args.fmt, model=args.model, force=args.force)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.fmt} export of {args.run} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
