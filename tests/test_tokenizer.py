"""The packaged GPT-2 tokenizer: offline, pinned ids, user text never raises, the cut is exact."""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clf_runtime import tokenizer
from clf_runtime.tokenizer import (
    CHARS_PER_TOKEN_BOUND,
    END_OF_TEXT_ID,
    encode_batch,
    get_encoding,
)

GPT2_FILES = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt2"


def test_known_ids() -> None:
    enc = get_encoding()
    assert enc.encode_ordinary("Hello, world") == [15496, 11, 995]
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
    assert enc.encode(text, allowed_special="all") == [
        15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114,
    ]  # fmt: skip
    assert enc.n_vocab == 50257
    assert enc.decode([15496, 11, 995]) == "Hello, world"


def test_user_text_with_special_tokens_is_ordinary_text() -> None:
    (ids,) = encode_batch(["a <|endoftext|> b"])
    assert END_OF_TEXT_ID not in ids
    assert get_encoding().decode(ids) == "a <|endoftext|> b"


def test_empty_text_is_end_of_text_and_head_is_kept() -> None:
    long_text = "one two three four five six"
    assert encode_batch(["", long_text], max_length=3) == [
        [END_OF_TEXT_ID],
        get_encoding().encode_ordinary(long_text)[:3],
    ]


def test_whitespace_run_longer_than_tiktoken_can_recurse_over() -> None:
    # tiktoken overflows its stack on ~1M-character whitespace runs; the cut prevents that.
    (ids,) = encode_batch([" " * 2_000_000], max_length=8)
    assert 1 <= len(ids) <= 8
    assert 8 * CHARS_PER_TOKEN_BOUND < 2_000_000


@pytest.mark.skipif(not GPT2_FILES.is_dir(), reason="../shared/data/gpt2 not beside the repo")
def test_ranks_match_openai_files() -> None:
    """The shipped ranks are exactly OpenAI's encoder.json (sha256 pinned in the data README)."""
    raw = (GPT2_FILES / "encoder.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == (
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    )
    encoder = json.loads(raw)
    enc = get_encoding()
    for word in ["Hello", "Ġworld", "Ġtea", "!", "Ġspam"]:
        text = word.replace("Ġ", " ")  # Ġ is the byte-level stand-in for a space
        assert enc.encode_ordinary(text) == [encoder[word]]
    assert len(encoder) == enc.n_vocab


def test_unknown_tokenizer_name() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'cl100k_base'"):
        get_encoding("cl100k_base")


# ----------------------------------------------------------------------------- the cut
# encode_batch cuts a text at max_length * CHARS_PER_TOKEN_BOUND characters before BPE. The
# claim: the kept tokens are always those of the uncut text. Checked against an independent
# reference (the uncut encoding, cut afterwards) on texts where the cut lands inside the
# awkward things: long words (one regex pre-token across the cut), whitespace runs, multi-byte
# characters, digit and punctuation runs, contractions.

# A chain of letter pairs whose GPT-2 merge ranks fall strictly from left to right: BPE merges
# it from the right, so every character added at its end flips how its start is split. It is
# the longest such chain of ASCII letter pairs (48 characters); a cut too short shows here.
MERGE_CHAIN = "PBWFHYRDJCVWNWCMGHHPNTFTEPMLCEOLeylucyssogellere"


def uncut(text: str, max_length: int) -> list[int]:
    """The reference: tokenize the whole text, keep the first ``max_length`` tokens."""
    return get_encoding().encode_ordinary(text)[:max_length] or [END_OF_TEXT_ID]


def placed_at_cut(run: str, inside: int, max_length: int, filler: str = "ab c ") -> str:
    """``filler`` repeated, then ``run`` starting ``inside`` characters before the cut."""
    cut = max_length * tokenizer.CHARS_PER_TOKEN_BOUND
    inside = min(inside, cut)
    return (filler * cut)[: cut - inside] + run


def _explicit_cases() -> list[tuple[str, str, int]]:
    cases: list[tuple[str, str, int]] = []
    for n in (1, 2, 8):
        cut = n * tokenizer.CHARS_PER_TOKEN_BOUND
        runs = {
            "letters": ("x" * 300, 150),
            "letters-from-start": ("a" * (cut + 1), cut),
            "merge-chain-ends-at-cut": (MERGE_CHAIN * 3, len(MERGE_CHAIN)),
            "merge-chain-straddles": (MERGE_CHAIN * 30, cut),
            "spaces": (" " * 300, 150),
            "spaces-then-word": (" " * 300 + "word", 299),
            "newlines": ("\n" * 301 + "x", 150),
            "mixed-whitespace": ("\t\n \r\x0b\x0c\xa0\u3000\u2028\x85" * 40, 201),
            "accents": ("é" * 300, 150),
            "combining-marks": ("e\u0301a\u0308" * 100, 151),
            "cjk": ("日本語の文字" * 60, 150),
            "emoji": ("😀" * 300, 150),
            "emoji-zwj": ("👩\u200d👩\u200d👧\u200d👦" * 60, 151),
            "flags": ("🇫🇷🇩🇪" * 80, 151),
            "surrogate-pair-split": ("\ud83d\ude00" * 10, 1),
            "digits": ("1234567890" * 40, 150),
            "arabic-digits": ("٣" * 300, 150),
            "equals-64-char-tokens": (" " + "=" * 300, 150),
            "dashes": ("-" * 300, 150),
            "punct": ("!?" * 150, 150),
            "endoftext": ("<|endoftext|>" * 20, 6),
        }
        for name, (run, inside) in runs.items():
            cases.append((f"{name}-n{n}", placed_at_cut(run, inside, n), n))
        for contraction in ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d"):
            for inside in range(len(contraction) + 1):
                text = placed_at_cut(contraction + " more", inside, n, filler="it ")
                cases.append((f"contraction{contraction}-{inside}-n{n}", text, n))
        for offset in (-2, -1, 0, 1, 2):  # a whitespace run ending near the cut, then a word
            text = "w" + " " * (cut - 1 + offset) + "word after"
            cases.append((f"space-run-ends-at-cut{offset:+d}-n{n}", text, n))
        for size in (cut - 1, cut, cut + 1):  # no cut, no cut, cut by one character
            cases.append((f"words-{size}-chars-n{n}", ("free prize " * cut)[:size], n))
    cases.append(("one-megabyte-of-words", "free prize call now " * 50_000, 8))
    cases.append(("empty", "", 1))
    return cases


_EXPLICIT = _explicit_cases()


@pytest.mark.parametrize(
    ("text", "max_length"), [c[1:] for c in _EXPLICIT], ids=[c[0] for c in _EXPLICIT]
)
def test_cut_keeps_the_tokens_of_the_uncut_text(text: str, max_length: int) -> None:
    assert encode_batch([text], max_length=max_length) == [uncut(text, max_length)]


@pytest.mark.parametrize(
    ("bound", "caught"),
    [(8, "equals-64-char-tokens-n1"), (45, "merge-chain-straddles-n1"), (1, "contraction'll-1-n2")],
)
def test_the_cases_catch_a_cut_that_is_too_short(
    monkeypatch: pytest.MonkeyPatch, bound: int, caught: str
) -> None:
    # The comparison has teeth: cut shorter than the longest token (66 characters) or than the
    # merge chain, and these cases see the difference.
    monkeypatch.setattr(tokenizer, "CHARS_PER_TOKEN_BOUND", bound)
    wrong = {
        name
        for name, text, n in _explicit_cases()
        if encode_batch([text], max_length=n) != [uncut(text, n)]
    }
    assert caught in wrong


def test_bpe_merges_at_the_end_of_a_word_can_change_its_start() -> None:
    # Why the cut needs a margin beyond the longest token (66 characters): BPE is not local.
    enc = get_encoding()
    assert enc.encode_ordinary(MERGE_CHAIN)[0] != enc.encode_ordinary(MERGE_CHAIN[:-1])[0]


# What a run that reaches the cut is made of: a unit, repeated up to the length needed.
_LETTERS = string.ascii_letters + "éèêàçñßøåæœЖжЯяΩω日本語中文한국어"
_RUN_ALPHABETS = [
    string.ascii_lowercase,
    _LETTERS,
    MERGE_CHAIN,
    "0123456789٣४²½",
    "!?.,;:-=_*#~'\"()[]{}<>/\\|@$%^&+`",
    " \n\t\r\x0b\x0c\xa0\u3000\u2028\x85\u200b",
    "e\u0301a\u0308o\u0303\u0327",
    "😀👍🏽🇫🇷\u200d\ufe0f👩",
    "'sdmtlvre ",
]
_run_unit = st.one_of(
    # Up to 300 characters of one alphabet: a long word, number, symbol or whitespace run.
    st.sampled_from(_RUN_ALPHABETS).flatmap(lambda a: st.text(a, min_size=1, max_size=300)),
    # A short unit of one alphabet, repeated: "aaaa", "abab", "\n\n", "日本日本".
    st.sampled_from(_RUN_ALPHABETS).flatmap(lambda a: st.text(a, min_size=1, max_size=4)),
    # The characters of GPT-2's longest tokens (runs of 64), and whitespace alone.
    st.sampled_from(["=", "-", ".", "_", "*", "/", " =", " ", "\n", "\t", " \n"]),
    # A piece of the merge chain: BPE splits its start by where it ends.
    st.integers(0, 46).map(lambda i: MERGE_CHAIN[i:]),
    # Anything at all, lone surrogates included.
    st.text(st.characters(codec=None), min_size=1, max_size=100),
)
_filler_unit = st.one_of(
    st.text(_LETTERS + " \n0123456789.,!'", min_size=1, max_size=40),
    st.text(st.characters(codec=None), min_size=1, max_size=40),
)


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


@st.composite
def _texts_cut_inside_a_run(draw: st.DrawFn) -> tuple[str, int]:
    """(text, max_length): filler, then a run that starts before the cut and reaches it."""
    max_length = draw(st.integers(1, 8))
    cut = max_length * tokenizer.CHARS_PER_TOKEN_BOUND
    # Mostly among the first max_length tokens (so the run holds kept tokens), else anywhere.
    start = draw(st.one_of(st.just(0), st.integers(0, 4 * max_length), st.integers(0, cut)))
    run = _repeat(draw(_run_unit), cut - start + draw(st.integers(0, 64)))
    head = _repeat(draw(_filler_unit), start)
    tail = draw(st.text(_LETTERS + " \n!1'", max_size=20))
    return head + run + tail, max_length


@settings(max_examples=300, deadline=None)
@given(case=_texts_cut_inside_a_run())
def test_cut_inside_a_run_keeps_the_tokens_of_the_uncut_text(case: tuple[str, int]) -> None:
    text, max_length = case
    assert encode_batch([text], max_length=max_length) == [uncut(text, max_length)]
