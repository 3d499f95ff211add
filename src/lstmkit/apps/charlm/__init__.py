"""A character-level LSTM language model (char-rnn, D2L): its texts and vocabulary, model, runs and generation.

``text`` reads the user's files and the built-in corpora; ``vocab`` is the characters (with an unknown class)
or UTF-8 bytes; ``tokenfile`` encodes a text of any size into a memory-mapped token file; ``model`` is the
network; ``stream`` is its training task (truncated BPTT); ``run`` is a run's config, training and loading;
``generate`` scores texts and samples from a trained model.
"""

from __future__ import annotations

from .generate import evaluate, generate, prompt_ids
from .model import CharLM, CharLMConfig
from .run import (
    EVAL_TOKENS,
    KIND,
    DataConfig,
    RunConfig,
    d2l_recipe,
    load_model,
    load_run,
    load_text,
    prepare_text,
    train_charlm,
)
from .stream import METRICS, TokenStreamTask, contiguous_batches, evaluation_sample, score_stream
from .text import CORPORA, PREPROCESS, describe_corpora, load_corpus, preprocess, read_texts, stdlib_text, text_files
from .vocab import RARE, VOCABS, Vocabulary

__all__ = [
    "CORPORA",
    "EVAL_TOKENS",
    "KIND",
    "METRICS",
    "PREPROCESS",
    "RARE",
    "VOCABS",
    "CharLM",
    "CharLMConfig",
    "DataConfig",
    "RunConfig",
    "TokenStreamTask",
    "Vocabulary",
    "contiguous_batches",
    "d2l_recipe",
    "describe_corpora",
    "evaluate",
    "evaluation_sample",
    "generate",
    "load_corpus",
    "load_model",
    "load_run",
    "load_text",
    "prepare_text",
    "preprocess",
    "prompt_ids",
    "read_texts",
    "score_stream",
    "stdlib_text",
    "text_files",
    "train_charlm",
]
