"""GPT-2 byte-pair encoding, built by tiktoken from ranks shipped inside this package.

No network access ever: tiktoken's own ``get_encoding("gpt2")`` downloads its files, so the
ranks live in ``clf_runtime/data/gpt2.tiktoken`` (converted once from OpenAI's
``encoder.json`` + ``vocab.bpe``; see ``data/LICENSE-gpt2``).

User text is always encoded with ``encode_ordinary``: ``<|endoftext|>`` typed by a user is
ordinary text and never raises.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Sequence
from importlib import resources

import tiktoken

__all__ = [
    "CHARS_PER_TOKEN_BOUND",
    "END_OF_TEXT_ID",
    "TOKENIZER_NAME",
    "encode_batch",
    "get_encoding",
]

TOKENIZER_NAME = "gpt2"
END_OF_TEXT_ID = 50256
# The longest GPT-2 token touches 66 characters, so the first `max_length` tokens of a text end
# within its first `max_length * 66` characters. Texts are cut at `max_length * 128` characters
# before tokenizing: a 10 MB string stays cheap, and tiktoken never sees a ~1M-character
# whitespace run (its regex overflows its stack and panics with a BaseException). The cut
# changes only the regex pre-token at the cut (it ends there instead of running on; a
# contraction such as "'ll" may split) and BPE's merges near that end. The kept tokens change
# only if, inside that one pre-token, a chain of competing merges carries the change back at
# least `62 * max_length - 2` characters. None is known: a whitespace pre-token cannot chain
# (its only multi-character token is "\n\n"), the longest chain of ASCII letter pairs in the
# GPT-2 ranks is 48 characters long, and in random text a change travels back at most ~8.
# tests/test_tokenizer.py checks the kept tokens against the uncut encoding on such texts.
CHARS_PER_TOKEN_BOUND = 128
# tiktoken's encode_ordinary_batch starts a thread pool on every call (~0.2 ms): for one text or
# a few short ones that costs far more than the encoding itself (~3 us per SMS), so those are
# encoded inline. The result is the same: the batch call maps `encode_ordinary` over the texts.
_INLINE_MAX_CHARS = 8192
_RANKS_FILE = "gpt2.tiktoken"
_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# The same split pattern tiktoken uses for its "gpt2" encoding.
_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _load_ranks() -> dict[bytes, int]:
    raw = resources.files("clf_runtime").joinpath("data").joinpath(_RANKS_FILE).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _RANKS_SHA256:
        raise RuntimeError(
            f"the packaged tokenizer file {_RANKS_FILE} is corrupt (sha256 {digest}, expected "
            f"{_RANKS_SHA256}); reinstall the package"
        )
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def get_encoding(name: str = TOKENIZER_NAME) -> tiktoken.Encoding:
    """Return the tiktoken encoding ``name`` (only ``"gpt2"`` exists), built offline."""
    if name != TOKENIZER_NAME:
        raise ValueError(f"unknown tokenizer {name!r}: this package ships only {TOKENIZER_NAME!r}")
    return tiktoken.Encoding(
        name=f"clf-{TOKENIZER_NAME}",
        pat_str=_GPT2_PATTERN,
        mergeable_ranks=_load_ranks(),
        special_tokens={"<|endoftext|>": END_OF_TEXT_ID},
        explicit_n_vocab=END_OF_TEXT_ID + 1,
    )


def encode_batch(
    texts: Sequence[str], *, max_length: int | None = None, num_threads: int = 2
) -> list[list[int]]:
    """Encode texts as ordinary text, keeping the first ``max_length`` tokens of each (the head).

    With ``max_length``, texts are first cut to ``max_length * CHARS_PER_TOKEN_BOUND``
    characters (see above). An empty text encodes to ``[END_OF_TEXT_ID]`` so that every text
    has a last real token to pool on: the model sees "end of text" and nothing else. Lone
    surrogates need no sanitizing: tiktoken replaces them with U+FFFD itself.
    """
    enc = get_encoding()
    if max_length is not None:
        limit = max_length * CHARS_PER_TOKEN_BOUND
        texts = [t if len(t) <= limit else t[:limit] for t in texts]
    if len(texts) == 1 or num_threads <= 1 or sum(map(len, texts)) <= _INLINE_MAX_CHARS:
        ids = [enc.encode_ordinary(t) for t in texts]
    else:
        ids = enc.encode_ordinary_batch(list(texts), num_threads=num_threads)
    out: list[list[int]] = []
    for seq in ids:
        if not seq:
            seq = [END_OF_TEXT_ID]
        elif max_length is not None and len(seq) > max_length:
            seq = seq[:max_length]
        out.append(seq)
    return out
