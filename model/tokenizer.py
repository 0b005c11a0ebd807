"""Text <-> token ids for the checkpoints llama-ner reads, behind one small interface.

`load_tokenizer` picks the backend from the files in a checkpoint folder:

- ``tokenizer.model`` in tiktoken format (``base64(token) rank`` per line): Llama 3. tiktoken with
  Meta's split regex; the 256 special tokens follow the base vocabulary from id 128000.
- ``tokenizer.model`` that is a protobuf: a Llama 2 style sentencepiece model.
- ``tokenizer.json`` with a byte-level BPE model (GPT-2 family: SmolLM2, Llama 3). tiktoken again,
  with the split regex derived from the pre-tokenizer and ranks rebuilt from the merge list.

Three rules hold for every backend:
- ``encode`` adds BOS only when asked (``bos=True``) and never adds EOS.
- ``encode_word`` gives a word the tokens it has inside running text, after a space: how a tagger
  encodes words one at a time (data/align.py). For byte-level BPE that is ``encode(" " + word)``; a
  sentencepiece model that adds a dummy prefix (Llama 2's) already puts its '▁' before a word, and a
  space of our own would become a second, lone '▁' token in front of every word.
- Special-token *text* in the input (say the characters ``<|im_start|>``) is encoded as plain text,
  never as the special id: NER input is untrusted text, and a word that looks like a control token
  must not turn into one. (HF ``tokenizers`` does the same with ``encode_special_tokens = True``.)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sentencepiece
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from model.files import read_json

# Meta's Llama 3 split regex (llama3 tokenizer.py; also the Split pattern of its tokenizer.json).
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GPT-2's split regex, as HF's ByteLevel pre-tokenizer applies it when use_regex is true.
GPT2_SPLIT_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# HF's Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)] (SmolLM2) as one regex.
# Digits cuts the text around every digit first, and GPT-2's regex then runs on each piece alone, so:
# - a digit is always a token of its own: " ?\p{N}+" becomes "\p{N}" (no leading space either);
# - a whitespace run just before a digit ends its piece, so "\s+(?!\S)" takes the whole run there:
#   "  1" -> ["  ", "1"], where GPT-2 on the whole text would give [" ", " 1"]. The lookahead
#   "(?![^\s\p{N}])" ("not followed by a non-space non-digit") says exactly that.
GPT2_INDIVIDUAL_DIGITS_SPLIT_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"
)

# Llama 3's special tokens, ids 128000..128255 in this order (read off Meta's tokenizer_config.json;
# a tokenizer_config.json or tokenizer.json next to tokenizer.model overrides them).
LLAMA3_NUM_SPECIAL_TOKENS = 256
_LLAMA3_NAMED_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
LLAMA3_SPECIAL_TOKENS = _LLAMA3_NAMED_SPECIAL_TOKENS + [
    f"<|reserved_special_token_{i}|>"
    for i in range(2, 2 + LLAMA3_NUM_SPECIAL_TOKENS - len(_LLAMA3_NAMED_SPECIAL_TOKENS))
]
LLAMA3_DEFAULT_ROLES = {
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|end_of_text|>",
    "pad_token": "<|finetune_right_pad_id|>",
}


class Tokenizer(Protocol):
    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int

    def encode(self, text: str, bos: bool = False) -> list[int]: ...

    def encode_word(self, word: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass
class TiktokenTokenizer:
    """Byte-level BPE run by tiktoken.

    tiktoken returns *ranks*; `rank_to_id` maps them to vocabulary ids when the two differ (None when
    they are equal, as in Llama 3's tokenizer.model). A rank mapped to -1 is a byte the vocabulary
    lacks and that has no unk token to fall back to: encoding it is an error.
    """

    encoding: tiktoken.Encoding
    rank_to_id: list[int] | None
    id_to_bytes: dict[int, bytes]
    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int
    source: Path  # the file it was read from, named in errors

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ranks = self.encoding.encode_ordinary(text)
        if self.rank_to_id is None:
            ids = ranks
        else:
            ids = [self.rank_to_id[r] for r in ranks]
            if -1 in ids:
                missing = sorted({r for r in ranks if self.rank_to_id[r] == -1})  # byte ranks = byte values
                raise ValueError(
                    f"cannot encode {text[:60]!r}: byte(s) {', '.join(f'0x{b:02x}' for b in missing)} "
                    f"are not in the vocabulary of {self.source} and it has no unk_token"
                )
        return [self.bos_id, *ids] if bos else ids

    def encode_word(self, word: str) -> list[int]:
        """The word's tokens after a space: the pre-tokenizer glues the space to the word ("Ġword")."""
        return self.encode(" " + word)

    def decode(self, ids: list[int]) -> str:
        try:
            data = b"".join(self.id_to_bytes[i] for i in ids)
        except KeyError as err:
            raise ValueError(f"token id {err.args[0]} is not in the vocabulary of {self.source}") from None
        return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A Llama 2 style sentencepiece model; bos/eos/pad come from the model itself.

    Whether the model adds a dummy prefix (a '▁' before the text, as a space would give) is read off how it
    encodes a letter: the protobuf of its settings would need the protobuf package.
    """

    def __init__(self, model_file: Path):
        try:
            self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        except (RuntimeError, OSError) as err:
            raise ValueError(
                f"{model_file}: neither a tiktoken BPE file nor a sentencepiece model ({err})"
            ) from err
        self.bos_id = self._processor.bos_id()
        self.eos_id = self._processor.eos_id()
        self.pad_id = self._processor.pad_id() if self._processor.pad_id() >= 0 else self.eos_id
        self.vocab_size = self._processor.vocab_size()
        self.source = model_file
        self._dummy_prefix = self._processor.encode("a", out_type=str)[0].startswith("▁")

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = self._processor.encode(text)
        return [self.bos_id, *ids] if bos else ids

    def encode_word(self, word: str) -> list[int]:
        """The word's tokens after a space, '▁word...': its own dummy prefix, or our space where it adds none. A word
        its normaliser erases whole (a zero-width space under NFKC) is the unknown token, so that it keeps a place."""
        ids = self._processor.encode(word if self._dummy_prefix else " " + word)
        return ids or [self._processor.unk_id()]

    def decode(self, ids: list[int]) -> str:
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is not in the vocabulary of {self.source}")
        return self._processor.decode(ids)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load the tokenizer of a checkpoint folder, or of one tokenizer file in it.

    In a folder, ``tokenizer.model`` wins over ``tokenizer.json`` (Llama 2 folders hold both, and
    only the former is a format we read); pass the ``tokenizer.json`` file to force the BPE path.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "tokenizer.model", path / "tokenizer.json"]
        model_file = next((c for c in candidates if c.is_file()), None)
        if model_file is None:
            raise FileNotFoundError(f"{path}: no tokenizer.model or tokenizer.json in this folder")
    elif path.is_file():
        model_file = path
    else:
        raise FileNotFoundError(f"{path}: no such tokenizer file or folder")

    if model_file.suffix == ".json":
        return _load_hf_byte_level_bpe(model_file)
    if _is_tiktoken_file(model_file):
        return _load_llama3_tiktoken(model_file)
    return SentencePieceTokenizer(model_file)


# --- Llama 3 tokenizer.model (tiktoken) ------------------------------------------------------------

_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/=]+ \d+")


def _is_tiktoken_file(model_file: Path) -> bool:
    with open(model_file, "rb") as f:
        first_line = f.readline().rstrip(b"\r\n")
    return _TIKTOKEN_LINE.fullmatch(first_line) is not None


def _read_tiktoken_ranks(model_file: Path) -> dict[bytes, int]:
    """The ranks of a tiktoken BPE file, read by tiktoken's own loader.

    `load_tiktoken_bpe` caches every file it reads, local ones too, under the file's *path* (in
    $TMPDIR/data-gym-cache or $TIKTOKEN_CACHE_DIR); without a hash it returns that copy after the file
    has changed. Passing the file's sha256 makes it read a changed file afresh. It also takes a token
    listed twice (the later rank wins) and any set of ranks: demanding ranks 0..n-1 catches both, and
    the special tokens, numbered from n on, rely on it.
    """
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    try:
        ranks = load_tiktoken_bpe(str(model_file), expected_hash=digest)
    except ValueError as err:
        reason = f" ({err.__cause__})" if err.__cause__ else ""
        raise ValueError(f"{model_file}: expected 'base64-token rank' on every line; {err}{reason}") from err
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(
            f"{model_file}: ranks are not 0..{len(ranks) - 1} without gaps or repeats (or a token is listed twice)"
        )
    return ranks


def _load_llama3_tiktoken(model_file: Path) -> TiktokenTokenizer:
    ranks = _read_tiktoken_ranks(model_file)
    num_base = len(ranks)
    specials = _added_tokens_beside(model_file.parent)
    if specials is None:
        specials = {name: num_base + i for i, name in enumerate(LLAMA3_SPECIAL_TOKENS)}
    for name, token_id in specials.items():
        if token_id < num_base:
            raise ValueError(
                f"{model_file.parent}: added token {name!r} has id {token_id}, inside the "
                f"{num_base}-token base vocabulary of {model_file.name}"
            )
    encoding = tiktoken.Encoding(
        name=f"llama3:{model_file}", pat_str=LLAMA3_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )
    id_to_bytes = {rank: token for token, rank in ranks.items()}
    id_to_bytes.update({token_id: name.encode() for name, token_id in specials.items()})
    bos_id, eos_id, pad_id = _role_ids(model_file.parent, specials, LLAMA3_DEFAULT_ROLES)
    return TiktokenTokenizer(
        encoding, None, id_to_bytes, bos_id, eos_id, pad_id, max(id_to_bytes) + 1, model_file
    )


def _added_tokens_beside(directory: Path) -> dict[str, int] | None:
    """Added tokens named by the HF files next to a tokenizer.model, or None when there are none."""
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        added = read_json(tokenizer_json).get("added_tokens", [])
        return {entry["content"]: entry["id"] for entry in added}
    config_file = directory / "tokenizer_config.json"
    if config_file.is_file():
        decoder = read_json(config_file).get("added_tokens_decoder", {})
        if decoder:
            return {entry["content"]: int(token_id) for token_id, entry in decoder.items()}
    return None


# --- HF byte-level BPE tokenizer.json ---------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> character map (Radford et al. 2019, encoder.py).

    Printable Latin-1 bytes stand for themselves and the other 68 bytes for U+0100 onwards, so every
    byte-level BPE token is a printable string (space 0x20 becomes 'Ġ', newline 'Ċ').
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_to_char = {b: chr(b) for b in printable}
    for offset, b in enumerate(b for b in range(256) if b not in byte_to_char):
        byte_to_char[b] = chr(256 + offset)
    return dict(sorted(byte_to_char.items()))


def split_pattern(pre_tokenizer: dict | None, source: Path) -> str:
    """The single regex that splits text like this tokenizer.json pre-tokenizer does."""
    is_sequence = pre_tokenizer is not None and pre_tokenizer.get("type") == "Sequence"
    steps = pre_tokenizer.get("pretokenizers", []) if is_sequence else [pre_tokenizer]
    kinds = [step.get("type") if step else None for step in steps]
    last = steps[-1] if steps else None
    if kinds and kinds[-1] == "ByteLevel" and not last.get("add_prefix_space", False):
        use_regex = last.get("use_regex", True)
        if len(steps) == 1 and use_regex:
            return GPT2_SPLIT_PATTERN
        first = steps[0]
        if len(steps) == 2 and use_regex and kinds[0] == "Digits" and first.get("individual_digits"):
            return GPT2_INDIVIDUAL_DIGITS_SPLIT_PATTERN
        if (
            len(steps) == 2
            and not use_regex
            and kinds[0] == "Split"
            and "Regex" in first.get("pattern", {})
            and first.get("behavior") == "Isolated"
            and not first.get("invert", False)
        ):
            return first["pattern"]["Regex"]
    raise ValueError(
        f"{source}: pre_tokenizer {json.dumps(pre_tokenizer)} is not supported; supported are "
        "ByteLevel(use_regex=true), Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)] "
        "and Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)], all without add_prefix_space"
    )


def _check_bpe_model(spec: dict, source: Path) -> None:
    model = spec.get("model", {})
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"model type {model.get('type')!r} (need 'BPE')")
    if model.get("dropout") not in (None, 0, 0.0):
        problems.append(f"dropout {model['dropout']}")
    if model.get("byte_fallback"):
        problems.append("byte_fallback")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        problems.append("continuing_subword_prefix / end_of_word_suffix")
    if spec.get("normalizer") is not None:
        problems.append(f"normalizer {spec['normalizer'].get('type')!r}")
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        problems.append(f"decoder {(spec.get('decoder') or {}).get('type')!r} (need 'ByteLevel')")
    if problems:
        raise ValueError(f"{source}: not a byte-level BPE tokenizer we support: {'; '.join(problems)}")


def _load_hf_byte_level_bpe(tokenizer_json: Path) -> TiktokenTokenizer:
    """tiktoken equal to HF's BPE on this tokenizer.json.

    HF merges the adjacent pair that comes first in the merge list; tiktoken merges the adjacent pair
    whose concatenation has the lowest rank. Ranking every merge result by its first merge makes the
    two agree, provided each token's merges sit together in the list (checked below). The 256 single
    bytes take ranks 0..255, merge results 256 onwards, and `rank_to_id` maps ranks back to ids.

    tiktoken returns a piece that is itself a token whole, without merging. HF does the same only with
    ignore_merges true; then tokens that no merge makes get ranks after the merges (and must not be
    buildable from two ranked halves, which HF would never join). With ignore_merges false HF runs the
    merges, and some tokens are never reached that way (588 in Llama 3's tokenizer.json, such as
    " việc"); they are left out of the ranks so that tiktoken cannot take them whole either.
    """
    spec = read_json(tokenizer_json)
    _check_bpe_model(spec, tokenizer_json)
    pattern = split_pattern(spec.get("pre_tokenizer"), tokenizer_json)
    model = spec["model"]
    vocab: dict[str, int] = model["vocab"]
    added = {entry["content"]: entry["id"] for entry in spec.get("added_tokens", [])}
    unk_token = model.get("unk_token")
    unk_id = -1 if unk_token is None else {**vocab, **added}[unk_token]

    id_to_bytes = _token_bytes(vocab, added, tokenizer_json)
    ranks, rank_to_id = _ranks_from_merges(model["merges"], vocab, id_to_bytes, unk_id, tokenizer_json)
    if model.get("ignore_merges", False):
        added_ids = set(added.values())
        unmade = [i for i in vocab.values() if i not in added_ids and id_to_bytes[i] not in ranks]
        _rank_unmade_tokens(unmade, ranks, rank_to_id, id_to_bytes, tokenizer_json)
    else:
        for token in [token for token in ranks if len(token) > 1 and not _reached_by_merges(token, ranks)]:
            del ranks[token]

    encoding = tiktoken.Encoding(
        name=f"hf-bpe:{tokenizer_json}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={}
    )
    bos_id, eos_id, pad_id = _role_ids(tokenizer_json.parent, {**vocab, **added}, {})
    return TiktokenTokenizer(
        encoding, rank_to_id, id_to_bytes, bos_id, eos_id, pad_id, max(id_to_bytes) + 1, tokenizer_json
    )


def _token_bytes(vocab: dict[str, int], added: dict[str, int], source: Path) -> dict[int, bytes]:
    """id -> bytes of every token: added tokens are their UTF-8 text, vocabulary tokens byte-level strings.

    Byte-level strings become bytes at C speed: byte-level characters translate to latin-1 characters
    and every other latin-1 character is deleted, so a changed length gives a foreign character away.
    """
    to_latin1 = {ord(char): chr(b) for b, char in bytes_to_unicode().items()}
    to_latin1 |= {c: None for c in range(256) if c not in to_latin1}
    id_to_bytes = {token_id: content.encode() for content, token_id in added.items()}
    for token, token_id in vocab.items():
        if token_id in id_to_bytes:
            continue
        latin1 = token.translate(to_latin1)
        if len(latin1) != len(token) or max(latin1, default="\0") > "\xff":
            raise ValueError(f"{source}: vocabulary token {token!r} has characters outside the byte-level alphabet")
        id_to_bytes[token_id] = latin1.encode("latin-1")
    return id_to_bytes


def _ranks_from_merges(
    merges: list, vocab: dict[str, int], id_to_bytes: dict[int, bytes], unk_id: int, source: Path
) -> tuple[dict[bytes, int], list[int]]:
    """(ranks, rank_to_id): the 256 bytes first, then each merge result at its first merge.

    A byte the vocabulary lacks maps to `unk_id`. A token that a later merge makes again, after merges
    of other tokens, is refused: one rank cannot stand for two places in the merge order.
    """
    ranks = {bytes([b]): b for b in range(256)}
    rank_to_id = [vocab.get(char, unk_id) for char in bytes_to_unicode().values()]
    last_result = None
    for index, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if len(pair) != 2:
            raise ValueError(f"{source}: merge #{index} {merge!r} is not a pair of tokens")
        result_id = vocab.get(pair[0] + pair[1])
        if result_id is None:
            raise ValueError(f"{source}: merge #{index} {merge!r} makes a token that is not in the vocabulary")
        result = id_to_bytes[result_id]
        if result in ranks:
            if result_id != last_result:
                raise ValueError(
                    f"{source}: merge #{index} {merge!r} makes its token again after other merges; "
                    "such a merge order has no tiktoken rank equivalent"
                )
            continue
        ranks[result] = len(rank_to_id)
        rank_to_id.append(result_id)
        last_result = result_id
    return ranks, rank_to_id


def _rank_unmade_tokens(
    unmade: list[int], ranks: dict[bytes, int], rank_to_id: list[int], id_to_bytes: dict[int, bytes], source: Path
) -> None:
    """With ignore_merges, rank the tokens no merge makes after the merges, so tiktoken takes them whole too.

    Refused: such a token that tiktoken could also build from two ranked halves, which HF never joins.
    """
    for token_id in unmade:
        ranks[id_to_bytes[token_id]] = len(rank_to_id)
        rank_to_id.append(token_id)
    for token_id in unmade:
        token = id_to_bytes[token_id]
        for k in range(1, len(token)):
            if token[:k] in ranks and token[k:] in ranks:
                raise ValueError(
                    f"{source}: no merge makes token {token_id}, but tiktoken would build it from "
                    f"{token[:k]!r} + {token[k:]!r}; this vocabulary has no tiktoken equivalent"
                )


def _reached_by_merges(token: bytes, ranks: dict[bytes, int]) -> bool:
    """Whether BPE on the bytes of `token` alone ends in that one token.

    A token that fails this is never made inside a longer word either: the merges inside its span
    run in the same order there, so they end in the same pieces.
    """
    parts = [token[i : i + 1] for i in range(len(token))]
    no_merge = 1 << 62  # above every rank
    pair_ranks = [ranks.get(parts[i] + parts[i + 1], no_merge) for i in range(len(parts) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == no_merge:
            return False
        i = pair_ranks.index(best)  # leftmost lowest rank, as in tiktoken and HF
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], no_merge)
        if i < len(pair_ranks):
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], no_merge)
    return True


# --- bos / eos / pad ---------------------------------------------------------------------------------


def _role_ids(directory: Path, token_to_id: dict[str, int], defaults: dict[str, str]) -> tuple[int, int, int]:
    """(bos, eos, pad) ids of the tokens that tokenizer_config.json names, `defaults` where it names none.

    pad falls back to eos: a padded position is masked anyway, and eos is always a real token.
    """
    names = dict(defaults)
    config_file = directory / "tokenizer_config.json"
    if config_file.is_file():
        config = read_json(config_file)
        for role in ("bos_token", "eos_token", "pad_token"):
            if role in config:
                value = config[role]
                names[role] = value.get("content") if isinstance(value, dict) else value
    source = config_file if config_file.is_file() else directory
    for role in ("bos_token", "eos_token"):
        if names.get(role) is None:
            raise ValueError(f"{source}: no {role} named; a tokenizer_config.json beside the tokenizer must name it")
    ids = {}
    for role, name in names.items():
        if name is None:
            continue
        if name not in token_to_id:
            raise ValueError(f"{source}: {role} {name!r} is not a token of this tokenizer")
        ids[role] = token_to_id[name]
    return ids["bos_token"], ids["eos_token"], ids.get("pad_token", ids["eos_token"])

