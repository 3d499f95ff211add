"""A character-level LSTM language model: the texts, the vocabulary, the model, and how to train and use it.

The model is char-rnn's (Karpathy 2015) and Dive into Deep Learning's (D2L, chapter "Long Short-Term Memory"):
each character is embedded (or one-hot encoded, as D2L does), an :class:`lstmkit.LSTM` reads the sequence,
and a linear decoder gives the logits of the next character. It is trained by :func:`lstmkit.train.fit` with
truncated backpropagation through time over contiguous batches.

Texts come from the user's files or from a built-in corpus (:data:`CORPORA`): ``timemachine`` (H. G. Wells,
The Time Machine, shipped as package data) and ``stdlib`` (the Python standard library's source on this
machine). ``preprocess="d2l"`` is the book's cleaning: letters only, lowercased, every run of other
characters one space. Text files (or folders, or globs) are encoded once into a memory-mapped token file beside
the run (:mod:`lstmkit.apps.tokenfile`), so a corpus larger than memory trains.

The vocabulary (:class:`Vocabulary`) is the training characters plus an unknown class that the rarest of them
train (``vocab="chars"``), or the 256 UTF-8 bytes (``vocab="bytes"``): any text can be scored, and bits per
character are always per character of the text.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import importlib.resources
import math
import os
import re
import shutil
import sysconfig
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import engines
from ..checkpoint import CheckpointError, load_checkpoint
from ..modules import LSTM
from ..train import FitResult, TrainConfig, fit, score_stream
from ..variants import CELLS, check_variants
from . import tokenfile

__all__ = [
    "CORPORA",
    "KIND",
    "PREPROCESS",
    "RARE",
    "VOCABS",
    "CharLM",
    "CharLMConfig",
    "DataConfig",
    "RunConfig",
    "TextError",
    "Vocabulary",
    "d2l_recipe",
    "describe_corpora",
    "evaluate",
    "generate",
    "load_corpus",
    "load_model",
    "load_text",
    "prepare_text",
    "preprocess",
    "prompt_ids",
    "read_texts",
    "stdlib_text",
    "train_charlm",
]

KIND = "charlm"  # the checkpoint kind (see lstmkit.checkpoint)
PREPROCESS = ("none", "d2l")
VOCABS = ("chars", "bytes")
# Training characters seen fewer times than this are the unknown class: it learns how often a rare character
# comes, which is what an unseen one in another text is most like.
RARE = 3
STDLIB_CAP = 4_000_000  # characters: about 150 of the standard library's modules, 10 CPU minutes of reading


from ..errors import TextError  # noqa: E402 (its home is errors.py; importable from here too)

# ---------------------------------------------------------------------------------------------------------
# Texts
# ---------------------------------------------------------------------------------------------------------


def read_texts(paths: Sequence[str | Path]) -> str:
    """The UTF-8 text of ``paths`` (files, folders, globs), joined in order (a newline between files that lack one).

    Raises FileNotFoundError/IsADirectoryError for a missing path, :class:`TextError` for an empty file,
    a binary one (it holds NUL bytes) or one that is not UTF-8 (naming the byte offset).
    """
    if not paths:
        raise TextError("no text files given")
    parts: list[str] = []
    for path in text_files(paths):
        data = path.read_bytes()
        if not data:
            raise TextError(f"{path} is empty: a language model needs text to learn from")
        if b"\x00" in data:
            raise TextError(f"{path} looks like a binary file (it holds NUL bytes), not text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TextError(
                f"{path} is not UTF-8 text: byte {error.start} ({data[error.start]:#04x}) does not decode; "
                "convert it first, e.g. iconv -f latin1 -t utf-8"
            ) from None
        if text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark is not part of the text
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(text)
    return "".join(parts)


def text_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files ``paths`` name: files, directories (every file below, sorted) and glob patterns
    (:func:`lstmkit.apps.tokenfile.expand_paths`); :class:`TextError` for a folder or pattern with none."""
    try:
        return tokenfile.expand_paths(paths)
    except tokenfile.SourceError as error:
        raise TextError(str(error)) from None


def stdlib_text(cap: int = STDLIB_CAP) -> str:
    """The Python standard library's ``.py`` files on this machine (found with ``sysconfig``), up to ``cap`` chars.

    Files are read depth first, each folder's entries sorted by name, so the corpus is the same on every run of
    the same Python; installed packages (``site-packages``) and files that are not UTF-8 are skipped.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise TextError(f"the Python standard library is not at {root} on this machine; use --text FILE")
    parts: list[str] = []
    size = 0
    for path in _sorted_sources(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if "\x00" in text:
            continue
        text = text[: cap - size]
        parts.append(text)
        size += len(text)
        if size >= cap:
            break
    return "".join(parts)


def _sorted_sources(folder: Path) -> Iterator[Path]:
    """The ``.py`` files below ``folder``, depth first with each folder's entries sorted by name (lazily: the
    walk stops where the cap is reached)."""
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and not entry.is_symlink():
            if entry.name not in ("site-packages", "dist-packages", "__pycache__"):
                yield from _sorted_sources(entry)
        elif entry.suffix == ".py" and entry.is_file():
            yield entry


def _timemachine() -> str:
    return importlib.resources.files("lstmkit").joinpath("data/timemachine.txt").read_text(encoding="utf-8")


# Built-in corpora: name -> (description, loader). None of them downloads anything.
CORPORA: dict[str, tuple[str, Any]] = {
    "timemachine": ("H. G. Wells, The Time Machine (1895), public domain, shipped with lstmkit", _timemachine),
    "stdlib": (f"this Python's standard library source, sorted by path, first {STDLIB_CAP:,} characters",
               stdlib_text),
}


def load_corpus(name: str) -> str:
    """The text of the built-in corpus ``name`` (one of :data:`CORPORA`)."""
    if name not in CORPORA:
        raise TextError(f"unknown corpus {name!r}; the built-in corpora are {', '.join(CORPORA)}")
    return str(CORPORA[name][1]())


def preprocess(text: str, mode: str, strip: bool = True) -> str:
    """``none``: the text as it is. ``d2l``: letters only, lowercased, each run of anything else one space
    (and with ``strip``, none at the ends: a prompt keeps its trailing space)."""
    if mode == "none":
        return text
    if mode == "d2l":
        # D2L cleans line by line and joins the lines with nothing between them; a line break is a run of
        # "other characters" like any other here, so words at line ends stay apart.
        cleaned = re.sub(r"[^A-Za-z]+", " ", text).lower()
        return cleaned.strip() if strip else cleaned
    raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {mode!r}")


# ---------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """The symbols a model reads and predicts: characters (``kind="chars"``) or UTF-8 bytes (``kind="bytes"``).

    chars: the known characters in id order (sorted by code point, so the same text gives the same ids).
    unknown: one more class, id ``len(chars)``, for every character outside ``chars`` (D2L's ``<unk>``);
    training maps the rarest characters to it (fewer than :data:`RARE` occurrences), so it gets probability
    mass, and any text can then be scored: an unknown character costs ``-log2 p(<unk>)`` bits. Vocabularies
    saved before this class existed have none and refuse unknown characters. ``bytes``: 256 symbols, every
    UTF-8 text, nothing unknown.
    """

    chars: tuple[str, ...]
    kind: str = "chars"
    unknown: bool = False

    @classmethod
    def from_text(cls, text: str, kind: str = "chars", min_count: int = 1, unknown: bool = False) -> Vocabulary:
        """The vocabulary of ``text``: its characters seen at least ``min_count`` times (the rest are the
        unknown class, when ``unknown``), or the 256 bytes."""
        if kind == "bytes":
            return cls((), "bytes", False)
        if kind != "chars":
            raise ValueError(f"vocab must be one of {', '.join(VOCABS)}, got {kind!r}")
        counts = Counter(text)
        return cls(tuple(sorted(ch for ch, n in counts.items() if n >= min_count)), "chars", unknown)

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Vocabulary:
        """The vocabulary a checkpoint's ``extra`` holds (checkpoints from before ``vocab`` are characters)."""
        return cls(tuple(extra.get("vocabulary", ())), str(extra.get("vocab", "chars")), bool(extra.get("unknown")))

    def to_extra(self) -> dict[str, Any]:
        return {"vocabulary": list(self.chars), "vocab": self.kind, "unknown": self.unknown}

    def __len__(self) -> int:
        return 256 if self.kind == "bytes" else len(self.chars) + int(self.unknown)

    @property
    def unknown_id(self) -> int | None:
        """The id of the unknown class, or None when there is none."""
        return len(self.chars) if self.kind == "chars" and self.unknown else None

    def unknown_chars(self, text: str) -> list[str]:
        """The characters of ``text`` outside the vocabulary, in order of first appearance (none for bytes)."""
        if self.kind == "bytes":
            return []
        known = set(self.chars)
        return list(dict.fromkeys(ch for ch in text if ch not in known))

    def count_unknown(self, text: str) -> int:
        """How many characters of ``text`` (with repeats) are outside the vocabulary."""
        if self.kind == "bytes":
            return 0
        known = set(self.chars)
        return sum(1 for ch in text if ch not in known)

    def encode(self, text: str, what: str = "text") -> Tensor:
        """``text`` as a ``(N,)`` int64 tensor of ids (N characters, or N UTF-8 bytes). Unknown characters
        become the unknown class; without one, :class:`TextError` names them."""
        if self.kind == "bytes":
            return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
        index = {ch: i for i, ch in enumerate(self.chars)}
        if self.unknown:
            unk = len(self.chars)
            return torch.tensor([index.get(ch, unk) for ch in text], dtype=torch.long)
        missing = self.unknown_chars(text)
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise TextError(
                f"the {what} has {len(missing)} character(s) the model never saw in training: {shown} "
                "(this model predates the unknown class: retrain it to score any text)"
            )
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of ``ids``; the unknown class reads as U+FFFD, and bytes that are not UTF-8 too."""
        if self.kind == "bytes":
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return "".join(self.chars[int(i)] if int(i) < len(self.chars) else "\ufffd" for i in ids)

    def start_id(self) -> int:
        """The context the first character of a text is predicted from: a line break (else a space, else the
        unknown class), as if the text followed another document."""
        if self.kind == "bytes":
            return ord("\n")
        for ch in ("\n", " "):
            if ch in self.chars:
                return self.chars.index(ch)
        return self.unknown_id if self.unknown_id is not None else 0


# ---------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class CharLMConfig:
    """The model: embedding -> lstmkit.LSTM -> linear decoder."""

    vocab_size: int
    embedding_dim: int = 64  # 0: one-hot input, as D2L does
    hidden_size: int = 256
    num_layers: int = 2
    # between LSTM layers and before the decoder (training only); 0 by default: a few CPU minutes on a corpus of
    # any size do not overfit, and dropout slowed learning there (docs/charlm.md); raise it for long runs
    dropout: float = 0.0
    proj_size: int = 0  # LSTMP (Sak et al. 2014): h_t projected down to this size, 0 for none
    bias: bool = True
    engine: str = "auto"  # any lstmkit engine
    # The LSTM variants (lstmkit.variants): off by default, which is torch.nn.LSTM's cell.
    cell: str = "lstm"  # "lstm" or "slstm" (xLSTM's sLSTM)
    peephole: bool = False
    layer_norm: bool = False
    coupled_gates: bool = False
    forget_bias: float | None = None  # initial forget-gate bias; None keeps torch.nn's init
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    weight_drop: float = 0.0  # DropConnect on W_hh (AWD-LSTM)

    def variants(self) -> dict[str, Any]:
        """The variant keyword arguments of :class:`lstmkit.LSTM`."""
        return {"cell": self.cell, "peephole": self.peephole, "layer_norm": self.layer_norm,
                "coupled_gates": self.coupled_gates, "forget_bias": self.forget_bias,
                "recurrent_dropout": self.recurrent_dropout, "zoneout": self.zoneout, "weight_drop": self.weight_drop}

    def __post_init__(self) -> None:
        _check(self.vocab_size >= 1, f"vocab_size must be >= 1, got {self.vocab_size}")
        _check(self.embedding_dim >= 0, f"embedding_dim must be >= 0 (0 for one-hot), got {self.embedding_dim}")
        _check(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}")
        _check(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}")
        _check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _check(0 <= self.proj_size < self.hidden_size,
               f"proj_size must be in [0, hidden_size={self.hidden_size}), got {self.proj_size}")
        _check(self.engine in engines.ENGINE_CHOICES,
               f"engine must be one of {', '.join(engines.ENGINE_CHOICES)}, got {self.engine!r}")
        _check(self.cell in CELLS, f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        try:
            check_variants(**self.variants(), proj_size=self.proj_size, bias=self.bias)
        except TypeError as error:
            raise ValueError(str(error)) from None


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it is split."""

    corpus: str | None = "timemachine"  # a built-in corpus, or None when ``texts`` are given
    texts: tuple[str, ...] = ()  # the user's text files, read in this order
    preprocess: str = "none"  # "none" or "d2l"
    val_fraction: float = 0.1  # the last part of the text, held out for validation
    train_chars: int = 0  # > 0: train on only the first this many characters (D2L's max_tokens=10000)
    vocab: str = "chars"  # "chars" (with an unknown class for the rarest) or "bytes" (UTF-8, 256 symbols)

    def __post_init__(self) -> None:
        _check((self.corpus is None) != (not self.texts), "give either a corpus or text files, not both")
        _check(self.corpus is None or self.corpus in CORPORA,
               f"corpus must be one of {', '.join(CORPORA)}, got {self.corpus!r}")
        _check(self.preprocess in PREPROCESS,
               f"preprocess must be one of {', '.join(PREPROCESS)}, got {self.preprocess!r}")
        _check(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _check(self.train_chars >= 0, f"train_chars must be >= 0, got {self.train_chars}")
        _check(self.vocab in VOCABS, f"vocab must be one of {', '.join(VOCABS)}, got {self.vocab!r}")


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
        """The inverse of :meth:`to_dict`; raises TypeError/ValueError for unknown or bad fields."""
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


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


class CharLM(nn.Module):
    """Embedding (or one-hot) -> :class:`lstmkit.LSTM` -> dropout -> linear decoder to next-character logits."""

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        V = config.vocab_size
        self.embedding = nn.Embedding(V, config.embedding_dim) if config.embedding_dim else None
        self.lstm = LSTM(
            config.embedding_dim or V,
            config.hidden_size,
            num_layers=config.num_layers,
            bias=config.bias,
            # torch.nn's dropout sits between layers only; with one layer it would do nothing (and warn).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            proj_size=config.proj_size,
            engine=config.engine,
            **config.variants(),
        )
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.proj_size or config.hidden_size, V)

    def forward(self, ids: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """ids: ``(T, B)`` int64 -> logits ``(T, B, vocab_size)`` and the final state ``(h, c)``.

        state: ``None`` (zeros) or the state a previous call returned (``(h, c, n, m)`` for the sLSTM cell).
        """
        if self.embedding is not None:
            x = self.embedding(ids)  # (T, B, E)
        else:
            x = F.one_hot(ids, self.config.vocab_size).to(self.decoder.weight.dtype)  # (T, B, V)
        out, state = self.lstm(x, state)  # (T, B, H)
        return self.decoder(self.drop(out)), state  # (T, B, V)


# ---------------------------------------------------------------------------------------------------------
# Training, loading, scoring, sampling
# ---------------------------------------------------------------------------------------------------------


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
    train, val = text[:-n_val], text[-n_val:]
    if data.train_chars:
        train = train[: data.train_chars]
    return train, val


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def train_charlm(
    run: RunConfig, out: str | Path, *, resume: bool = False, progress: bool = True
) -> FitResult:
    """Train the model ``run`` describes on its text; checkpoints, ``metrics.csv`` and ``curves.png`` go in ``out``.

    ``run.model.vocab_size`` is replaced by the size of the text's vocabulary. With ``resume``, the run in
    ``out`` continues from its last checkpoint, exactly (see :func:`lstmkit.train.fit`); the text must be the
    same as when it began. Raises :class:`TextError` for unusable text, ValueError for bad settings.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))  # under torchrun each process trains on 1/world of the text
    if run.data.texts and run.data.preprocess == "none":
        # Files: encoded once into a token file beside the run and memory-mapped (any size of text).
        try:
            tokens = tokenfile.encode_files(
                text_files(run.data.texts), Path(out) / "tokens", vocab=run.data.vocab,
                val_fraction=run.data.val_fraction, train_chars=run.data.train_chars, min_count=RARE,
                progress=progress and os.environ.get("RANK", "0") == "0")
        except tokenfile.SourceError as error:
            raise TextError(str(error)) from None
        vocab = Vocabulary.from_extra(tokens.vocabulary)
        train_ids, val_ids = tokens.ids[: tokens.split], tokens.ids[tokens.split :]
        n_train, n_val, digest = tokens.train_chars, tokens.val_chars, tokens.text_sha256
    else:
        # A built-in corpus, or the D2L preprocessing (which reads the whole text): in memory.
        text = load_text(run.data)
        train_text, val_text = prepare_text(text, run.data)
        vocab = Vocabulary.from_text(train_text, run.data.vocab, min_count=RARE, unknown=True)
        train_ids = vocab.encode(train_text, "training text")
        val_ids = vocab.encode(val_text, "validation text")
        n_train, n_val, digest = len(train_text), len(val_text), _digest(text)
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, vocab_size=len(vocab)))
    B, T = run.train.batch_size, run.train.seq_len
    if len(train_ids) // world < B * T + T + 1 or len(val_ids) // world < 2:
        _discard_tokens(Path(out), resume)
    if len(train_ids) // world < B * T + T + 1:
        raise TextError(
            f"the text is too short: {n_train:,} characters to train on"
            f"{f' ({n_train // world:,} per process)' if world > 1 else ''}, and --batch-size {B} x "
            f"--seq-len {T} needs at least {B * T + T + 1:,}; give more text or smaller --batch-size/--seq-len"
        )
    if len(val_ids) // world < 2:
        raise TextError(f"the validation part is too short ({n_val} characters); raise --val-fraction")
    extra = {**vocab.to_extra(), "text_sha256": digest, "train_chars": n_train, "val_chars": n_val}
    if resume:
        saved = load_checkpoint(Path(out) / "last", kind=KIND)
        if saved.extra.get("text_sha256") != extra["text_sha256"]:
            raise TextError(
                f"the text differs from the one the run in {out} was trained on; resume with the same text"
            )
        if Vocabulary.from_extra(saved.extra) != vocab:
            raise TextError(f"the run in {out} was trained with another vocabulary (an older lstmkit?); "
                            "start a new --out")
    torch.manual_seed(run.train.seed)  # the initial weights
    model = CharLM(run.model)
    # Engines differ in the last bits, and which one "auto" resolves to depends on the machine (a kernel that
    # builds here, a dtype its CPU runs) and on lstmkit.engines.set_auto_tuning: the checkpoint records the
    # engine of the training calls, and a resumed run pins it, so that resuming stays exact.
    probe = torch.zeros(T, B, model.lstm.input_size)
    extra["engine"] = model.lstm.resolved_engine(probe.transpose(0, 1) if model.lstm.batch_first else probe)
    if resume and run.model.engine == "auto":
        recorded = saved.extra.get("engine")
        if recorded is not None and recorded != extra["engine"]:
            model.lstm.engine = recorded  # raises ValueError (one line) where that engine cannot run here
            extra["engine"] = recorded
    return fit(
        model,
        train_ids,
        val_ids,
        run.train,
        out,
        kind=KIND,
        run_config=run.to_dict(),
        extra=extra,
        resume=resume,
        progress=progress,
        resume_hint=f"resume it with: lstmkit train --out {out} --resume",
        val_scale=len(val_ids) / n_val,  # the validation loss per character, whatever the vocabulary
    )


def _discard_tokens(out: Path, resume: bool) -> None:
    """A new run refused for its text leaves nothing behind: not its token file, nor a folder it made."""
    if resume or not (out / "tokens").is_dir():
        return
    shutil.rmtree(out / "tokens", ignore_errors=True)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CharLM, Vocabulary, RunConfig]:
    """The model, vocabulary and run config of a ``charlm`` checkpoint (a run directory or a checkpoint in it).

    The model is in eval mode on ``device``. Raises :class:`lstmkit.checkpoint.CheckpointError` for a missing,
    truncated, corrupted or other-model checkpoint.
    """
    ckpt = load_checkpoint(path, kind=KIND, map_location=device)
    try:
        run = RunConfig.from_dict(ckpt.config)
        vocab = Vocabulary.from_extra(ckpt.extra)
        if not vocab.chars and vocab.kind == "chars":
            raise KeyError("vocabulary")
        model = CharLM(run.model).to(device)
        model.load_state_dict(ckpt.state_dict)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        message = str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {ckpt.path} does not hold a valid charlm model: {message}") from None
    if len(vocab) != run.model.vocab_size:
        raise CheckpointError(f"checkpoint {ckpt.path} is inconsistent: vocabulary size differs from the model's")
    return model.eval(), vocab, run


@torch.no_grad()
def evaluate(model: CharLM, vocab: Vocabulary, text: str, preprocess_mode: str = "none") -> dict[str, float | int]:
    """Score ``text``: ``{"perplexity", "bits_per_char", "chars", "unknown_chars"}``.

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
    """The ids of ``prompt`` and a note for the user when some characters had to be mapped ("" when none).

    Unknown characters become the unknown class; a vocabulary without one (an older checkpoint) drops them.
    """
    missing = vocab.unknown_chars(prompt)
    if not missing:
        return vocab.encode(prompt, "prompt"), ""
    shown = ", ".join(repr(ch) for ch in missing[:10]) + (", ..." if len(missing) > 10 else "")
    if vocab.unknown:
        return vocab.encode(prompt, "prompt"), (
            f"the prompt has {len(missing)} character(s) the model never saw in training ({shown}); "
            "they were read as the unknown class")
    kept = "".join(ch for ch in prompt if ch in set(vocab.chars))
    if not kept:
        raise TextError(f"the prompt has only characters the model never saw in training ({shown})")
    return vocab.encode(kept, "prompt"), (
        f"the prompt has {len(missing)} character(s) the model never saw in training ({shown}); this model has "
        "no unknown class, so they were left out")


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
    ids = prompt_ids(vocab, prompt)[0].to(device)
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


def describe_corpora() -> str:
    """One line per built-in corpus: its name and what it is (``lstmkit corpora``)."""
    width = max(map(len, CORPORA))
    return "\n".join(f"{name:<{width}}  {description}" for name, (description, _) in CORPORA.items())
