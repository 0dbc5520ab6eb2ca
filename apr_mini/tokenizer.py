"""The trace tokenizer: a standard Hugging Face fast tokenizer built from the trace language.

Paper section 4 trains a Llama-2 tokenizer, which splits numbers into single digits. apr-mini keeps
that property with a much smaller vocabulary (measured on CPU: digit-level numbers are what let a
small model learn the arithmetic): every fixed phrase of the trace language is one token, every digit
is one token, and every other printable ASCII character is a fallback token, so no trace text ever
becomes ``<unk>`` and ``decode(encode(text)) == text`` exactly.

It is a ``WordLevel`` model behind a regex ``Split`` pre-tokenizer (the same pattern as
:func:`apr_mini.trace_language.split_tokens`) and a ``Fuse`` decoder, saved as ``tokenizer.json``
with its config, so ``AutoTokenizer``, SGLang, vLLM and ``transformers serve`` load it. Spawn and join
markers are ordinary tokens, not special ones: servers decode with ``skip_special_tokens=True``.
Encoding adds BOS in front (the root prompt is BOS + ``Moving to Node #0 ...``); training appends EOS.
"""

from __future__ import annotations

import string
from pathlib import Path

from . import trace_language as tl

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
CHARACTERS = [c for c in string.printable if c not in "\x0b\x0c\r"]


NUMBER_SCHEMES = ("digits", "integers")
# "integers": one token per integer up to here; longer numbers split in 3-digit pieces. 999 covers
# nearly every number of the cpu task (3 numbers <= 12); a 10k vocabulary made CPU training several
# times slower (the output layer and softmax over the vocabulary dominated a step).
MAX_INTEGER_TOKEN = 999


def vocabulary(numbers: str = "digits") -> dict[str, int]:
    """Specials, then the trace language's phrases, then (``numbers="integers"``) every integer up to
    :data:`MAX_INTEGER_TOKEN`, then single characters (digits included)."""
    if numbers not in NUMBER_SCHEMES:
        raise ValueError(f"numbers must be one of {NUMBER_SCHEMES}, not {numbers!r}")
    integers = [str(i) for i in range(MAX_INTEGER_TOKEN + 1)] if numbers == "integers" else []
    vocab: dict[str, int] = {}
    for token in SPECIALS + tl.PHRASES + integers + CHARACTERS:
        vocab.setdefault(token, len(vocab))
    return vocab


def build_tokenizer(numbers: str = "digits"):
    """A ``PreTrainedTokenizerFast`` for traces (BOS added on encode, EOS/PAD defined). ``numbers``:
    ``"digits"`` (one token per digit, the default and the paper's Llama-2 behaviour) or
    ``"integers"`` (one token per integer; the SFT sweep's comparison)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary(numbers)
    piece = rf"|\d{{1,{len(str(MAX_INTEGER_TOKEN))}}}|"
    pattern = tl.TOKEN_PATTERN.pattern if numbers == "digits" else tl.TOKEN_PATTERN.pattern.replace(r"|\d|", piece)
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                        special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, padding_side="left", clean_up_tokenization_spaces=False)


def save_tokenizer(path: str | Path):
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(path))
    return tokenizer


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
