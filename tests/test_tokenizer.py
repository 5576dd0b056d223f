"""The packaged GPT-2 tokenizer: offline, pinned ids, user text never raises."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

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
