"""Using a trained char-LM: score a whole text (perplexity, bits per character), and sample text from it."""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from ...errors import TextError
from .model import CharLM
from .stream import score_stream
from .text import preprocess
from .vocab import Vocabulary


@torch.no_grad()
def evaluate(model: CharLM, vocab: Vocabulary, text: str, preprocess_mode: str = "none") -> dict[str, float | int]:
    """Score all of ``text``: ``{"perplexity", "bits_per_char", "chars", "unknown_chars"}``.

    Every character is predicted from all before it, the first from a line break (:meth:`Vocabulary.start_id`);
    ``chars`` is the number of characters of the (preprocessed) text, and bits and perplexity are per
    character of it whatever the vocabulary (a byte model's bits are summed over each character's bytes).
    ``unknown_chars``: characters outside the vocabulary, scored as the unknown class. A text longer than
    65,536 symbols is cut into that many rows scored side by side (each row from a zero state), which changes
    the result little.
    """
    text = preprocess(text, preprocess_mode)
    if not text:
        raise TextError("the text is empty: there is nothing to score")
    ids = torch.cat([torch.tensor([vocab.start_id()]), vocab.encode(text)])
    rows = math.ceil(len(ids) / 65_536)
    was_training = model.training
    model.eval()
    nll, count = score_stream(model, ids.to(model.decoder.weight.device), rows=rows)
    model.train(was_training)
    nats = nll / count * (len(ids) - 1) / len(text)  # per token, times tokens per character
    return {"perplexity": math.exp(nats), "bits_per_char": nats / math.log(2), "chars": len(text),
            "unknown_chars": vocab.count_unknown(text)}


def prompt_ids(vocab: Vocabulary, prompt: str) -> tuple[Tensor, str]:
    """The ids of ``prompt`` and a note for the user when some characters are unknown to the model ("" when
    none): they are read as the unknown class."""
    missing = vocab.unknown_chars(prompt)
    if not missing:
        return vocab.encode(prompt), ""
    shown = ", ".join(repr(ch) for ch in missing[:10]) + (", ..." if len(missing) > 10 else "")
    return vocab.encode(prompt), (f"the prompt has {len(missing)} character(s) the model never saw in training "
                                  f"({shown}); they were read as the unknown class")


@torch.no_grad()
def generate(
    model: CharLM,
    vocab: Vocabulary,
    prompt: str,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield ``length`` characters that follow ``prompt``, one at a time, as they are sampled.

    The prompt is read once (see :func:`prompt_ids` for characters the model does not know); then each step
    feeds one symbol and carries ``(h, c)``, so the prefix is never recomputed. A byte model yields a
    character once its UTF-8 bytes are complete (an invalid sequence yields U+FFFD); the unknown class is
    never sampled. temperature: > 0 divides the logits; 0 takes the most likely symbol. top_k: > 0 samples
    among the k most likely only. seed: the sampling generator's seed (same seed, same text).
    """
    if not prompt:
        raise TextError("the prompt must have at least one character")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 for no limit), got {top_k}")
    device = model.decoder.weight.device
    ids = vocab.encode(prompt).to(device)
    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace") if vocab.kind == "bytes" else None
    unknown = vocab.unknown_id
    model.eval()
    logits, state = model(ids.view(-1, 1))  # (P, 1, V)
    last = logits[-1, 0]
    produced = 0
    while produced < length:
        scores = last.float().cpu()
        if unknown is not None:
            scores[unknown] = -math.inf  # "some character we never saw" cannot be written down
        if temperature == 0:
            choice = int(scores.argmax())
        else:
            scores = scores / temperature
            if 0 < top_k < scores.numel():
                cutoff = scores.topk(top_k).values[-1]
                scores = scores.masked_fill(scores < cutoff, -math.inf)
            choice = int(torch.multinomial(scores.softmax(-1), 1, generator=generator))
        if decoder is None:
            produced += 1
            yield vocab.chars[choice]
        else:
            for char in decoder.decode(bytes([choice])):
                if produced < length:
                    produced += 1
                    yield char
        logits, state = model(torch.tensor([[choice]], device=device), state)  # one step, (h, c) carried
        last = logits[-1, 0]
