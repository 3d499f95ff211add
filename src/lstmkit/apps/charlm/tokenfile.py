"""Texts larger than memory: encoded once into a compact token file, memory-mapped, streamed into batches.

A run's text (files, a directory of them, or a glob) is read in chunks and written as token ids, one
``uint8`` (byte vocabulary) or ``uint16`` (up to 65,536 characters; ``int32`` beyond) each, into
``DIR/tokens/<key>.bin`` beside the run, where ``key`` hashes the sources (their paths, sizes and
modification times) and the settings that change the ids. A second run or a resume with the same sources
finds the file and reads nothing else. Training and validation read the file through ``numpy.memmap``: only
the pages a batch touches come into memory, so a corpus of any size trains in a few hundred MB.

Reading is three passes over the text, each a chunk at a time: (1) its length and SHA-256, (2) the character
counts of the training part (for the vocabulary and its unknown class), (3) the ids. A progress bar on
stderr follows them. A token file whose size does not match its description (a copy cut short, a disk
that filled up) is found when it is opened and encoded again, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...fileio import atomic_write
from .text import CHUNK, chunks

MAX_CODE = 0x110000  # Unicode code points


def code_points(text: str) -> np.ndarray:
    """The code points of ``text``, ``(len(text),)`` uint32."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id (int32 past uint16: torch reads it everywhere)."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if vocab_size <= 65_536 else np.dtype(np.int32)


@dataclass(frozen=True)
class TokenFile:
    """An encoded text: ``ids`` (memory-mapped), where validation starts, and what it was made from."""

    path: Path
    ids: torch.Tensor  # (N,) uint8/uint16/int32, memory-mapped
    split: int  # ids[:split] train, ids[split:] validate
    train_chars: int
    val_chars: int
    text_sha256: str
    vocabulary: dict  # Vocabulary.to_extra()


def source_key(files: Sequence[Path], settings: dict) -> str:
    """A hash of the sources (path, size, modification time) and of the settings that change the ids."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        stat = path.stat()
        h.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def open_token_file(path: Path) -> TokenFile:
    """The token file at ``path`` (and its ``.json`` description), memory-mapped; ValueError if it is damaged:
    its description unreadable, or the file not as long as the description says."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        dtype, tokens = np.dtype(meta["dtype"]), int(meta["tokens"])
        split, vocabulary = int(meta["split"]), dict(meta["vocabulary"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"the token file {path} has no usable description ({error})") from None
    size = path.stat().st_size
    if size != tokens * dtype.itemsize or not 0 <= split <= tokens:
        raise ValueError(f"the token file {path} is damaged: {size:,} bytes, expected {tokens * dtype.itemsize:,}")
    array = np.memmap(path, dtype=dtype, mode="c")  # copy-on-write: torch wants writable
    return TokenFile(path=path, ids=torch.from_numpy(array), split=split,
                     train_chars=int(meta["train_chars"]), val_chars=int(meta["val_chars"]),
                     text_sha256=str(meta["text_sha256"]), vocabulary=vocabulary)


def _bar(files: Sequence[Path], what: str, progress: bool) -> tqdm:
    total = sum(p.stat().st_size for p in files)
    return tqdm(total=total, unit="B", unit_scale=True, desc=what, disable=not progress, leave=False,
                dynamic_ncols=True)


def _pieces(files: Sequence[Path], what: str, progress: bool) -> Iterator[tuple[int, str]]:
    """(character position, piece) over the whole text, with a bar."""
    bar = _bar(files, what, progress)
    position = 0
    try:
        for piece in chunks(files, bar=bar):
            yield position, piece
            position += len(piece)
    finally:
        bar.close()


def encode_files(files: Sequence[Path], cache: Path, *, vocab: str, val_fraction: float, train_chars: int,
                 min_count: int, progress: bool = True) -> TokenFile:
    """Encode ``files`` into ``cache/<key>.bin`` (or find it there) and open it.

    The last ``val_fraction`` of the characters is the validation part; ``train_chars`` > 0 keeps only the
    first that many of the rest. vocab ``"bytes"``: UTF-8 bytes; ``"chars"``: the training part's characters
    seen at least ``min_count`` times, every other character one unknown class (the last id).
    """
    settings = {"vocab": vocab, "val_fraction": val_fraction, "train_chars": train_chars, "min_count": min_count,
                "format": 1}
    key = source_key(files, settings)
    path = cache / f"{key}.bin"
    if path.is_file() and path.with_suffix(".json").is_file():
        try:
            return open_token_file(path)
        except ValueError as damaged:
            print(f"lstmkit: {damaged}; encoding the text again", file=sys.stderr, flush=True)

    # Pass 1: length and hash.
    digest, total = hashlib.sha256(), 0
    for _, piece in _pieces(files, "reading", progress):
        digest.update(piece.encode("utf-8"))
        total += len(piece)
    n_val = max(1, int(total * val_fraction))
    val_start = total - n_val
    n_train = min(val_start, train_chars) if train_chars else val_start

    def parts(position: int, piece: str) -> tuple[str, str]:
        """The piece's share of the training part and of the validation part."""
        end = position + len(piece)
        train = piece[: max(0, n_train - position)] if position < n_train else ""
        val = piece[max(0, val_start - position):] if end > val_start else ""
        return train, val

    # Pass 2 (characters only): the training part's counts, for the vocabulary.
    lut: np.ndarray | None = None
    if vocab == "chars":
        counts = np.zeros(MAX_CODE, dtype=np.int64)
        for position, piece in _pieces(files, "counting", progress):
            if position >= n_train:
                break
            train, _ = parts(position, piece)
            counts += np.bincount(code_points(train), minlength=MAX_CODE)
        known = np.flatnonzero(counts >= min_count)
        chars = tuple(chr(int(c)) for c in known)
        lut = np.full(MAX_CODE, len(chars), dtype=np.int64)  # everything else: the unknown class
        lut[known] = np.arange(len(chars))
        vocabulary = {"vocabulary": list(chars), "vocab": "chars", "unknown": True}
        dtype = id_dtype(len(chars) + 1)
    else:
        vocabulary = {"vocabulary": [], "vocab": "bytes", "unknown": False}
        dtype = np.dtype(np.uint8)

    def ids(text: str) -> np.ndarray:
        if lut is None:
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return lut[code_points(text)].astype(dtype)

    # Pass 3: the ids, training part then validation part, appended to the file (not written through a
    # memory map, whose dirty pages would count as this process's memory).
    cache.mkdir(parents=True, exist_ok=True)
    split = 0
    val_tokens = 0
    with atomic_write(path, "wb") as handle:
        # (every process under torchrun encodes for itself: a name of its own, then the same atomic rename)
        val_file = path.with_name(f".{path.name}.{os.getpid()}.val.tmp")
        try:
            with open(val_file, "wb") as val_handle:
                for position, piece in _pieces(files, "encoding", progress):
                    train, val = parts(position, piece)
                    if train:
                        block = ids(train)
                        handle.write(block.tobytes())
                        split += len(block)
                    if val:
                        block = ids(val)
                        val_handle.write(block.tobytes())
                        val_tokens += len(block)
            with open(val_file, "rb") as val_reader:
                while data := val_reader.read(CHUNK):
                    handle.write(data)
        except OSError as error:
            if error.filename is None:  # a full disk: say which file could not be written
                raise OSError(error.errno, error.strerror, str(path)) from error
            raise
        finally:
            val_file.unlink(missing_ok=True)
    meta = {"dtype": dtype.name, "split": split, "tokens": split + val_tokens, "train_chars": n_train,
            "val_chars": n_val, "text_sha256": digest.hexdigest(), "vocabulary": vocabulary,
            "sources": [str(p) for p in files], "settings": settings}
    with atomic_write(path.with_suffix(".json"), "w", encoding="utf-8") as out:
        json.dump(meta, out, indent=1)
    return open_token_file(path)


def memory_peak_mb() -> float:
    """This process's peak resident memory so far, in MB (``getrusage``; Linux reports KiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if os.uname().sysname != "Darwin" else peak / 1e6
