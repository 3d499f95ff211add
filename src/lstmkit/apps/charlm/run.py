"""A char-LM run: its config (model, data, training), its text turned into token streams, training on the one
loop (:mod:`lstmkit.train`), and loading a trained model back.

Text files are encoded once into a memory-mapped token file beside the run (:mod:`.tokenfile`), so a corpus
larger than memory trains; a built-in corpus, or the D2L preprocessing (which reads the whole text), is
encoded in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...checkpoint import LAST, Checkpoint, load_checkpoint
from ...errors import CheckpointError, TextError
from ...train import FitResult, TrainConfig, train
from . import tokenfile
from .model import CharLM, CharLMConfig
from .stream import METRICS, TokenStreamTask
from .text import CORPORA, PREPROCESS, load_corpus, preprocess, read_texts, text_files
from .vocab import RARE, VOCABS, Vocabulary

KIND = "charlm"  # the checkpoint kind (see lstmkit.checkpoint)
# Validation tokens an evaluation during training scores (a fixed sample; all of a shorter validation part):
# about 2 s of scoring for the default model on one CPU thread (docs/charlm.md).
EVAL_TOKENS = 65_536


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from, how it is split, and how much of the validation part an evaluation scores."""

    corpus: str | None = "timemachine"  # a built-in corpus, or None when ``texts`` are given
    texts: tuple[str, ...] = ()  # the user's text files, read in this order
    preprocess: str = "none"  # "none" or "d2l"
    val_fraction: float = 0.1  # the last part of the text, held out for validation
    train_chars: int = 0  # > 0: train on only the first this many characters (D2L's max_tokens=10000)
    vocab: str = "chars"  # "chars" (with an unknown class for the rarest) or "bytes" (UTF-8, 256 symbols)
    # an evaluation during training scores this many validation tokens, the same ones every time, spread over
    # the validation part (all of it when shorter); `lstmkit evaluate` scores a whole text
    eval_tokens: int = EVAL_TOKENS

    def __post_init__(self) -> None:
        _check((self.corpus is None) != (not self.texts), "give either a corpus or text files, not both")
        _check(self.corpus is None or self.corpus in CORPORA,
               f"corpus must be one of {', '.join(CORPORA)}, got {self.corpus!r}")
        _check(self.preprocess in PREPROCESS,
               f"preprocess must be one of {', '.join(PREPROCESS)}, got {self.preprocess!r}")
        _check(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _check(self.train_chars >= 0, f"train_chars must be >= 0, got {self.train_chars}")
        _check(self.vocab in VOCABS, f"vocab must be one of {', '.join(VOCABS)}, got {self.vocab!r}")
        _check(self.eval_tokens >= 1, f"eval_tokens must be >= 1, got {self.eval_tokens}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a ``lstmkit train`` run is: saved with every checkpoint as ``config`` in ``config.json``."""

    model: CharLMConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError for missing, unknown or bad fields."""
        d = dict(data["data"])
        d["texts"] = tuple(d.get("texts", ()))
        return cls(model=CharLMConfig(**data["model"]), data=DataConfig(**d), train=TrainConfig(**data["train"]))


def d2l_recipe() -> tuple[CharLMConfig, DataConfig, TrainConfig]:
    """D2L's LSTM on The Time Machine (``lstmkit train --recipe d2l``), without the vocabulary size.

    As the book: its preprocessing, the first 10,000 characters (``max_tokens=10000``), one-hot input, one
    layer of 256 hidden units, 35 steps, batch 32, sequential batches with the state carried over, SGD at
    learning rate 1, gradient clipping to norm 1, 500 epochs, no dropout, no weight decay. Added: the last
    10% of the book is held out and scored after every epoch (the book reports training perplexity only).
    """
    model = CharLMConfig(vocab_size=1, embedding_dim=0, hidden_size=256, num_layers=1, dropout=0.0)
    data = DataConfig(corpus="timemachine", preprocess="d2l", val_fraction=0.1, train_chars=10_000)
    train = TrainConfig(
        seq_len=35, batch_size=32, optimizer="sgd", lr=1.0, weight_decay=0.0, clip=1.0, schedule="constant",
        max_epochs=500, eval_every=0, patience=0,
    )
    return model, data, train


def load_text(data: DataConfig) -> str:
    """The raw text ``data`` names (the user's files or a built-in corpus), preprocessed."""
    raw = read_texts(data.texts) if data.texts else load_corpus(str(data.corpus))
    text = preprocess(raw, data.preprocess)
    if not text:
        raise TextError("the text is empty after preprocessing")
    return text


def prepare_text(text: str, data: DataConfig) -> tuple[str, str]:
    """Split ``text`` into (training part, validation part): validation is the last ``val_fraction``."""
    n_val = max(1, int(len(text) * data.val_fraction))
    train_part, val = text[:-n_val], text[-n_val:]
    if data.train_chars:
        train_part = train_part[: data.train_chars]
    return train_part, val


@dataclass(frozen=True)
class Streams:
    """A run's text as token streams: training and validation ids, and what they were made from."""

    vocab: Vocabulary
    train_ids: Tensor  # (N,) any integer width, maybe memory-mapped
    val_ids: Tensor
    train_chars: int
    val_chars: int
    text_sha256: str


def token_streams(data: DataConfig, out: Path, progress: bool = False) -> Streams:
    """The token streams of ``data``'s text: text files through a token file in ``out/tokens`` (any size),
    a built-in corpus or the D2L preprocessing in memory."""
    if data.texts and data.preprocess == "none":
        tokens = tokenfile.encode_files(
            text_files(data.texts), out / "tokens", vocab=data.vocab, val_fraction=data.val_fraction,
            train_chars=data.train_chars, min_count=RARE, progress=progress)
        return Streams(Vocabulary.from_extra(tokens.vocabulary), tokens.ids[: tokens.split],
                       tokens.ids[tokens.split :], tokens.train_chars, tokens.val_chars, tokens.text_sha256)
    text = load_text(data)
    train_text, val_text = prepare_text(text, data)
    vocab = Vocabulary.from_text(train_text, data.vocab, min_count=RARE)
    return Streams(vocab, vocab.encode(train_text), vocab.encode(val_text), len(train_text), len(val_text),
                   hashlib.sha256(text.encode("utf-8")).hexdigest())


def run_config(checkpoint: Checkpoint) -> RunConfig:
    """The run config a ``charlm`` checkpoint holds; CheckpointError (one line: train again) for one written by
    an older lstmkit or otherwise unreadable."""
    try:
        return RunConfig.from_dict(checkpoint.config)
    except (KeyError, TypeError, ValueError) as error:
        message = str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {checkpoint.path} holds a charlm config this lstmkit cannot read "
                              f"({message}): it was written by an older lstmkit; train the model again") from None


def load_run(out: str | Path) -> tuple[RunConfig, Checkpoint]:
    """The run in ``out`` to resume: its config and its ``last/`` checkpoint with the trainer's state (read once)."""
    saved = load_checkpoint(Path(out) / LAST, kind=KIND, trainer=True)
    return run_config(saved), saved


def train_charlm(run: RunConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
                 saved: Checkpoint | None = None) -> FitResult:
    """Train the model ``run`` describes on its text; checkpoints, ``metrics.csv`` and ``curves.png`` go in ``out``.

    ``run.model.vocab_size`` is replaced by the size of the text's vocabulary. With ``resume``, the run in
    ``out`` continues from ``saved`` (its ``last/``, as :func:`load_run` reads it; read here when None),
    exactly; the text must be the same as when it began. Raises :class:`TextError` for unusable text,
    ValueError for bad settings, :class:`CheckpointError` for a ``last/`` that cannot be resumed.
    """
    out = Path(out)
    if resume and saved is None:
        saved = load_run(out)[1]
    rank0 = os.environ.get("RANK", "0") == "0"
    streams = token_streams(run.data, out, progress=progress and rank0)
    vocab = streams.vocab
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, vocab_size=len(vocab)))
    extra = {**vocab.to_extra(), "text_sha256": streams.text_sha256, "train_chars": streams.train_chars,
             "val_chars": streams.val_chars}
    if saved is not None and saved.extra.get("text_sha256") != streams.text_sha256:
        raise TextError(f"the text differs from the one the run in {out} was trained on; resume with the same text")
    torch.manual_seed(run.train.seed)  # the initial weights
    model = CharLM(run.model)
    # Engines differ in the last bits, and which one "auto" resolves to depends on the machine (a kernel that
    # builds here, a dtype its CPU runs) and on lstmkit.engines.set_auto_tuning: the checkpoint records the
    # engine of the training calls, and a resumed run pins it, so that resuming stays exact.
    B, T = run.train.batch_size, run.train.seq_len
    probe = torch.zeros(T, B, model.lstm.input_size)
    extra["engine"] = model.lstm.resolved_engine(probe.transpose(0, 1) if model.lstm.batch_first else probe)
    if saved is not None and run.model.engine == "auto":
        recorded = saved.extra.get("engine")
        if recorded is not None and recorded != extra["engine"]:
            model.lstm.engine = recorded  # raises ValueError (one line) where that engine cannot run here
            extra["engine"] = recorded
    task = TokenStreamTask(model, streams.train_ids, streams.val_ids, run.train, eval_tokens=run.data.eval_tokens,
                           val_scale=len(streams.val_ids) / streams.val_chars)  # per character, whatever the vocab
    try:
        return train(task, run.train, out, kind=KIND, run_config=run.to_dict(), extra=extra, resume=resume,
                     resume_from=saved, progress=progress, metric_fields=METRICS,
                     resume_hint=f"resume it with: lstmkit train --out {out} --resume")
    except TextError:
        if not resume:
            _discard_tokens(out)
        raise


def _discard_tokens(out: Path) -> None:
    """A new run refused for its text leaves nothing behind: not its token file, nor a folder it made."""
    shutil.rmtree(out / "tokens", ignore_errors=True)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CharLM, Vocabulary, RunConfig]:
    """The model, vocabulary and run config of a ``charlm`` checkpoint (a run directory or a checkpoint in it).

    The model is in eval mode on ``device``. Raises :class:`lstmkit.errors.CheckpointError` for a missing,
    truncated, corrupted, other-model or older-lstmkit checkpoint.
    """
    ckpt = load_checkpoint(path, kind=KIND, map_location=device)
    run = run_config(ckpt)
    vocab = Vocabulary.from_extra(ckpt.extra)
    if len(vocab) != run.model.vocab_size:
        raise CheckpointError(f"checkpoint {ckpt.path} is inconsistent: vocabulary size differs from the model's")
    model = CharLM(run.model).to(device)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {ckpt.path} does not hold a valid charlm model: {message}") from None
    return model.eval(), vocab, run
