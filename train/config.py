"""Every setting of a fine-tuning run, in one dataclass that is saved with the run.

The defaults are the recipe `make train` runs on a 2-core CPU with the embedded SmolLM2-135M; named recipes
carry the same choices to larger models on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.decode import DECODERS
from data.schemes import SCHEMES
from lora.inject import LLAMA_TARGETS
from predictor.device import PRECISIONS, check_device
from predictor.settings import FINETUNES, TaggingSettings

DEFAULT_MODEL = "weights/smollm2-135m-instruct"
WINDOWS = ("document", "sentence", "both")


def flag(setting: str) -> str:
    """The command-line flag of a setting: `eval_max_tokens` -> `--eval-max-tokens`."""
    return "--" + setting.replace("_", "-")


@dataclass(frozen=True)
class TrainConfig:
    model: str = DEFAULT_MODEL  # HF checkpoint folder (config.json, safetensors, tokenizer files)
    data: str | None = None  # folder with train.txt / valid.txt; None: $CONLL_DIR, then data/conll2003/
    scheme: str = "auto"  # tag scheme of the data files: auto, iob1, iob2 or bioes (data/schemes.py)
    labels: str | None = None  # labels file (one per line, in head order); None: learned from train.txt
    out: str = "runs/default"  # run directory: config, adapter, head, logs, checkpoints
    # Attention: bidirectional by default, since a tagger labels a word better when it sees the words after it;
    # --causal keeps the decoder's mask, optionally lifted in the top k layers: the ablation
    # (docs/results.md#the-first-recipe-document-windows).
    causal: bool = False
    bidirectional_top_layers: int = 0
    # lora: train LoRA adapters and the head; full: train every weight, the reference LoRA matches
    # (docs/results.md#the-first-recipe-document-windows).
    finetune: str = "lora"
    # LoRA (Hu et al. 2021) on all seven projections at rank 16: adapting the MLP too pays, a higher rank does not
    # (docs/results.md#the-first-recipe-document-windows). Dropout 0, since on a CPU
    # LoRA's dropout masks cost much of a training step (docs/performance.md#lora-dropout).
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LLAMA_TARGETS
    head_dropout: float = 0.1
    # Optimisation. lr 1e-3 beat 5e-4 on both of two seeds (docs/results.md#the-first-recipe-document-windows),
    # and 2e-3 gained nothing (docs/results.md#documents-sentences-alone-and-without-final-punctuation).
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    clip_grad_norm: float = 1.0
    # Passes over the training windows; a fraction trains the first part of the shuffled epoch, rounded up to a
    # whole step. 0.55 of an epoch of `both` windows meets each sentence about 1.1 times instead of twice, so that
    # `make train` fits in an hour on a 2-core CPU, for a little F1 in each view
    # (docs/results.md#documents-sentences-alone-and-without-final-punctuation).
    epochs: float = 0.55
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule is sized to it)
    # Batches by size: as many windows as fit in `batch_tokens` padded tokens per step, so that a step of short
    # sentence windows weighs about as much as a step of two document windows. None: `batch_size` windows per step
    # (split into `grad_accum` micro-batches); on the command line a --batch-size without --batch-tokens means that.
    batch_tokens: int | None = 512
    batch_size: int = 2
    grad_accum: int = 1
    limit: int | None = None  # use only the first N training sentences
    seed: int = 0
    # Windows
    # document: windows over whole documents (data/align.py); sentence: one window per sentence; both: every epoch
    # holds both, the document windows and every sentence alone, so that the tagger learns text with its document
    # around it and text that comes alone: document windows alone fail on sentences alone, and trading a share of
    # the documents for their sentences does not mend that
    # (docs/results.md#documents-sentences-alone-and-without-final-punctuation).
    window: str = "both"
    max_len: int = 256  # tokens per window; longer documents (or sentences) are split into overlapping windows
    stride: int | None = 192  # tokens between the starts of overlapping windows; None: half a window
    # With --window both: the share of the sentences trained alone (drawn once, by seed) that are trained without
    # their final punctuation, as headlines, chat messages and short texts typed without a full stop come: a
    # two-word name without one was missed otherwise
    # (docs/results.md#documents-sentences-alone-and-without-final-punctuation).
    # None: 0.5 with --window both, else 0.
    bare_fraction: float | None = None
    add_bos: bool = True
    # Evaluation, checkpoints, early stopping
    eval_every: int | None = None  # optimizer steps between full evaluations (keep the best); None: once per epoch
    # Between full evaluations, for the curves: every N steps score the first `subset_eval_sentences` of the
    # validation and training sentences (None or 0: never). They keep no adapter and do not count for --patience.
    # Small and often: a default run gets eight points before its full evaluation for a few % of its time
    # (docs/design.md#a-run-directory).
    subset_eval_every: int | None = 100
    subset_eval_sentences: int = 100
    # Padded tokens per evaluation batch, kept for tagging too. None: by the device the run tags on, 2048 on a CPU
    # (faster there than 8192), more on a GPU (predictor.device.tagging_tokens).
    eval_max_tokens: int | None = None
    decode: str = "viterbi"  # per-word scores -> tags: the best valid IOB2 sequence, or argmax (data/decode.py)
    train_eval_sentences: int = 500  # also score the first N training sentences at each evaluation (overfitting)
    patience: int | None = None  # stop after this many evaluations without a better validation F1
    checkpoint_every: int = 200  # optimizer steps between resumable checkpoints
    # Hardware
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: str = "auto"  # auto: bf16 autocast on a GPU or a CPU with bf16 instructions, else float32
    compile: bool = False  # torch.compile each transformer block (fuses the elementwise ops around the matmuls)
    fsdp: bool = False  # under torchrun: shard the frozen base per transformer block instead of replicating it

    def __post_init__(self) -> None:
        """Every setting is checked here, before anything is read or loaded: a bad one is refused at the start in
        one line naming its flag, not a division by zero or a failed evaluation an hour in, nor a different run."""
        self._check_numbers()
        check_device(self.device)
        for name, choices in (("precision", PRECISIONS), ("window", WINDOWS), ("scheme", SCHEMES),
                              ("decode", DECODERS), ("finetune", FINETUNES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{flag(name)} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} is not a multiple of --grad-accum {self.grad_accum}")
        if self.bidirectional_top_layers and not self.causal:
            raise ValueError("--bidirectional-top-layers lifts the causal mask of the top layers; it needs --causal")
        if self.finetune == "full" and self.fsdp:
            raise ValueError("--fsdp shards the frozen base; --finetune full has none (train on one device)")
        if self.bare_fraction and self.window != "both":
            raise ValueError("--bare-fraction strips the sentences that --window both trains alone; use --window both")
        unknown = set(self.lora_targets) - set(LLAMA_TARGETS)
        if unknown:
            raise ValueError(f"unknown LoRA targets {sorted(unknown)}; choose from {list(LLAMA_TARGETS)}")

    def _check_numbers(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag(field.name)} must be a finite number, got {value}")
        budget = self.max_len - int(self.add_bos)  # tokens of a window besides BOS
        window = f"one window (--max-len {self.max_len})"
        ranges = [  # (setting, whether its value is in range, the range); a setting that may be None may be None
            ("bidirectional_top_layers", self.bidirectional_top_layers >= 0, "at least 0"),
            ("lora_r", self.lora_r >= 1, "at least 1"),
            ("lora_alpha", self.lora_alpha > 0, "positive"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("head_dropout", 0 <= self.head_dropout < 1, "in [0, 1)"),
            ("lr", self.lr > 0, "positive"),
            ("weight_decay", self.weight_decay >= 0, "at least 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("clip_grad_norm", self.clip_grad_norm > 0, "positive"),
            ("epochs", self.epochs > 0, "positive"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, "at least 1"),
            ("batch_tokens", self.batch_tokens is None or self.batch_tokens >= self.max_len, f"at least {window}"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("grad_accum", self.grad_accum >= 1, "at least 1"),
            ("limit", self.limit is None or self.limit >= 1, "at least 1"),
            ("seed", self.seed >= 0, "at least 0"),
            ("max_len", budget >= 1, f"at least {1 + int(self.add_bos)} (a token besides BOS)"),
            ("stride", self.stride is None or 1 <= self.stride <= budget,
             f"in [1, {budget}] (the tokens of a window besides BOS)"),
            ("bare_fraction", self.bare_fraction is None or 0 <= self.bare_fraction <= 1, "in [0, 1]"),
            ("eval_every", self.eval_every is None or self.eval_every >= 1, "at least 1"),
            ("subset_eval_every", self.subset_eval_every is None or self.subset_eval_every >= 0,
             "at least 0 (0: never)"),
            ("subset_eval_sentences", self.subset_eval_sentences >= 1, "at least 1"),
            ("eval_max_tokens", self.eval_max_tokens is None or self.eval_max_tokens >= self.max_len,
             f"at least {window}"),
            ("train_eval_sentences", self.train_eval_sentences >= 0, "at least 0"),
            ("patience", self.patience is None or self.patience >= 1, "at least 1"),
            ("checkpoint_every", self.checkpoint_every >= 1, "at least 1"),
        ]
        for name, in_range, allowed in ranges:
            if not in_range:
                raise ValueError(f"{flag(name)} must be {allowed}, got {getattr(self, name)}")

    @property
    def bare_share(self) -> float:
        """The share of the sentences trained alone that lose their final punctuation (`bare_fraction` resolved)."""
        if self.bare_fraction is not None:
            return self.bare_fraction
        return 0.5 if self.window == "both" else 0.0

    def tagging(self) -> TaggingSettings:
        """What tagging needs of these settings: the run keeps it as tagging.json, so that `tag/` needs no TrainConfig.
        Evaluation tags with document windows unless the run trains on sentences alone."""
        return TaggingSettings(
            model=str(Path(self.model).resolve()), causal=self.causal,
            bidirectional_top_layers=self.bidirectional_top_layers, head_dropout=self.head_dropout,
            finetune=self.finetune, max_len=self.max_len, stride=self.stride, add_bos=self.add_bos,
            document=self.window != "sentence", max_tokens=self.eval_max_tokens, decode=self.decode,
            precision=self.precision)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        if "lora_targets" in raw:
            raw = {**raw, "lora_targets": tuple(raw["lora_targets"])}
        return cls(**raw)


# Larger models on a GPU, with the choices that pay on the small one carried over.
RECIPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {},
    # WNUT-17 (`--data` its folder): independent posts, so windows hold one post each and a step 16 of them (about
    # as many tokens as 2 document windows); posts are few, so several epochs, the best one kept
    # (docs/results.md#wnut-17).
    "wnut17": dict(window="sentence", batch_size=16, epochs=4, lr=1e-3),
    # The small model's choices (bidirectional, LoRA on all seven projections, document windows of 256 tokens every
    # 192) with a lower learning rate for the larger model, more epochs on a GPU, and early stopping.
    "llama-3.2-1b": dict(model="weights/llama-3.2-1b", lr=2e-4, epochs=3, batch_size=8, patience=2,
                         eval_every=None, device="auto", precision="auto"),
}


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """`python -m train` arguments -> TrainConfig. A recipe sets defaults; explicit flags win over it."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m train",
                                     description="Fine-tune a Llama NER tagger on CoNLL-style data.")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="a named recipe (flags override it)")
    for field in dataclasses.fields(TrainConfig):
        option = flag(field.name)
        default = getattr(defaults, field.name)
        if field.name == "causal":
            parser.add_argument(option, action="store_true", default=None, help="keep the causal mask")
        elif field.name == "compile":
            parser.add_argument(option, action="store_true", default=None, help="torch.compile the transformer blocks")
        elif field.name == "fsdp":
            parser.add_argument(option, action="store_true", default=None,
                                help="shard the frozen base across the torchrun ranks (FSDP)")
        elif field.name == "add_bos":
            parser.add_argument("--no-bos", dest="add_bos", action="store_false", default=None,
                                help="do not start windows with the BOS token")
        elif field.name == "lora_targets":
            parser.add_argument(option, nargs="+", default=None, help="projections to adapt (default: all seven)")
        else:
            kind = {int: int, float: float, str: str}.get(type(default), str)
            if field.name in ("data", "max_steps", "limit", "eval_every", "subset_eval_every", "patience", "stride",
                              "batch_tokens", "eval_max_tokens"):
                kind = int if field.name != "data" else str
            if field.name == "bare_fraction":
                kind = float
            parser.add_argument(option, type=kind, default=None, help=f"default: {default}")
    args = vars(parser.parse_args(argv))
    recipe = args.pop("recipe")
    base: dict[str, Any] = dict(RECIPES[recipe]) if recipe else {}
    base.update({k: v for k, v in args.items() if v is not None})
    if "batch_size" in base and "batch_tokens" not in base:
        base["batch_tokens"] = None  # a batch size (of a recipe or a flag) alone means steps of that many windows
    return TrainConfig.from_json(base)
