"""The char-LM's texts: the user's files (folders, globs) read as UTF-8, the built-in corpora, preprocessing.

Every check of a text file (empty, binary, not UTF-8) is made here, once, as it is read a chunk at a time
(:func:`chunks`), whether the text is read whole (:func:`read_texts`) or encoded into a token file.
"""

from __future__ import annotations

import codecs
import glob
import importlib.resources
import re
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...errors import TextError

PREPROCESS = ("none", "d2l")
CHUNK = 1 << 22  # bytes read at a time: 4 MiB (about 64 MB of working arrays while encoding)
STDLIB_CAP = 4_000_000  # characters: about 150 of the standard library's modules, 10 CPU minutes of reading


def text_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files named by ``paths``: a file as it is, a directory as every file below it (sorted by path, hidden
    ones skipped), a glob pattern (``*``, ``?``, ``[``) as its sorted matches. FileNotFoundError for a path that
    is none of these, :class:`TextError` for no paths, or a directory or pattern with no files."""
    if not paths:
        raise TextError("no text files given")
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise TextError(f"{path} is a directory with no files in it; give text files or a folder of them")
            files += found
        elif not path.exists() and any(ch in str(name) for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(name), recursive=True) if Path(p).is_file())
            if not found:
                raise TextError(f"no file matches {name}")
            files += found
        else:
            if not path.exists():
                raise FileNotFoundError(2, "No such file or directory", str(path))
            files.append(path)
    return files


def chunks(files: Sequence[Path], size: int | None = None, bar: tqdm | None = None) -> Iterator[str]:
    """The UTF-8 text of ``files`` in pieces of about ``size`` bytes (default :data:`CHUNK`): a byte-order
    mark dropped, a newline between files that lack one. :class:`TextError` for an empty, binary (NUL bytes)
    or non-UTF-8 file, naming the byte offset."""
    size = size or CHUNK
    ended_with_newline = True
    for index, path in enumerate(files):
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset, first = 0, True
        with open(path, "rb") as handle:
            while True:
                data = handle.read(size)
                if bar is not None:
                    bar.update(len(data))
                if not data:
                    break
                if b"\x00" in data:
                    raise TextError(f"{path} looks like a binary file (it holds NUL bytes), not text")
                try:
                    text = decoder.decode(data)
                except UnicodeDecodeError as error:
                    raise _not_utf8(path, offset + len(data), error) from None
                offset += len(data)
                if first:
                    text = text[1:] if text.startswith("\ufeff") else text
                    if index and not ended_with_newline:
                        text = "\n" + text
                    first = False
                if text:
                    ended_with_newline = text.endswith("\n")
                    yield text
        if offset == 0:
            raise TextError(f"{path} is empty: a language model needs text to learn from")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise _not_utf8(path, offset, error) from None


def _not_utf8(path: Path, end: int, error: UnicodeDecodeError) -> TextError:
    """The error for bytes that do not decode; ``end``: the file offset where ``error.object`` ends."""
    at = end - len(error.object) + error.start
    return TextError(f"{path} is not UTF-8 text: byte {at} ({error.object[error.start]:#04x}) does not decode; "
                     "convert it first, e.g. iconv -f latin1 -t utf-8")


def read_texts(paths: Sequence[str | Path]) -> str:
    """The UTF-8 text of ``paths`` (files, folders, globs: :func:`text_files`), joined in order (a newline
    between files that lack one), checked as :func:`chunks` checks it."""
    return "".join(chunks(text_files(paths)))


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


def describe_corpora() -> str:
    """One line per built-in corpus: its name and what it is (``lstmkit corpora``)."""
    width = max(map(len, CORPORA))
    return "\n".join(f"{name:<{width}}  {description}" for name, (description, _) in CORPORA.items())


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
