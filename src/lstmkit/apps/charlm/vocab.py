"""The char-LM's vocabulary: the training characters plus one unknown class, or the 256 UTF-8 bytes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...errors import CheckpointError

VOCABS = ("chars", "bytes")
# Training characters seen fewer times than this are the unknown class: it learns how often a rare character
# comes, which is what an unseen one in another text is most like.
RARE = 3


@dataclass(frozen=True)
class Vocabulary:
    """The symbols a model reads and predicts: characters (``kind="chars"``) or UTF-8 bytes (``kind="bytes"``).

    chars: the known characters in id order (sorted by code point, so the same text gives the same ids), then
    one more class, id ``len(chars)``, for every character outside them (D2L's ``<unk>``). Training maps the
    rarest characters to it (fewer than :data:`RARE` occurrences), so it gets probability mass and any text can
    be scored: an unknown character costs ``-log2 p(<unk>)`` bits. ``bytes``: 256 symbols, nothing unknown.
    """

    chars: tuple[str, ...]
    kind: str = "chars"

    @classmethod
    def from_text(cls, text: str, kind: str = "chars", min_count: int = 1) -> Vocabulary:
        """The vocabulary of ``text``: its characters seen at least ``min_count`` times, or the 256 bytes."""
        if kind == "bytes":
            return cls((), "bytes")
        if kind != "chars":
            raise ValueError(f"vocab must be one of {', '.join(VOCABS)}, got {kind!r}")
        counts = Counter(text)
        return cls(tuple(sorted(ch for ch, n in counts.items() if n >= min_count)), "chars")

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Vocabulary:
        """The vocabulary a checkpoint's ``extra`` holds; CheckpointError for one an older lstmkit wrote."""
        kind = extra.get("vocab")
        if kind not in VOCABS or "vocabulary" not in extra or (kind == "chars" and not extra.get("unknown")):
            raise CheckpointError("the checkpoint's vocabulary was written by an older lstmkit (it has no unknown "
                                  "class); train the model again with this version")
        return cls(tuple(extra["vocabulary"]), kind)

    def to_extra(self) -> dict[str, Any]:
        return {"vocabulary": list(self.chars), "vocab": self.kind, "unknown": self.kind == "chars"}

    def __len__(self) -> int:
        return 256 if self.kind == "bytes" else len(self.chars) + 1

    @property
    def unknown_id(self) -> int | None:
        """The id of the unknown class, or None for bytes (which have none)."""
        return len(self.chars) if self.kind == "chars" else None

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

    def encode(self, text: str) -> Tensor:
        """``text`` as a ``(N,)`` int64 tensor of ids (N characters, or N UTF-8 bytes); characters outside the
        vocabulary become the unknown class."""
        if self.kind == "bytes":
            return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
        index = {ch: i for i, ch in enumerate(self.chars)}
        unk = len(self.chars)
        return torch.tensor([index.get(ch, unk) for ch in text], dtype=torch.long)

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
        return len(self.chars)
