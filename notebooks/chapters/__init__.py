"""The chapters' cells, one module per chapter: shared code, and the prose in English and in Chinese.

Each chapter module defines ``SLUG`` (the notebook's file name), ``TITLE`` (per language) and ``CELLS``: a list
of :func:`md` and :func:`code` cells. ``build.py`` turns them into ``en/<SLUG>.ipynb`` and
``zh-CN/<SLUG>.ipynb``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

LANGUAGES = ("en", "zh-CN")


@dataclass(frozen=True)
class Cell:
    kind: str  # "markdown" or "code"
    text: dict[str, str]  # language -> source


def _clean(source: str) -> str:
    return textwrap.dedent(source).strip("\n")


# A line break inside a Chinese paragraph shows as a space in rendered Markdown, where Chinese text has none.
# Joined: a break between two Chinese characters (or marks), and a break before Chinese punctuation. A break
# between Latin text and a Chinese character stays: it shows as the space that belongs there.
_CJK = "\\u3000-\\u303f\\u4e00-\\u9fff\\uff00-\\uffef\\u2014\\u2026\\u201c\\u201d"
_CJK_BREAK = re.compile(f"(?<=[{_CJK}])\\n *(?=[{_CJK}])|\\n *(?=[\\u3000-\\u303f\\uff00-\\uffef])")


def join_chinese_lines(text: str) -> str:
    """``text`` with the line breaks inside Chinese paragraphs removed."""
    return _CJK_BREAK.sub("", text)


def md(en: str, zh: str) -> Cell:
    """A Markdown cell, written once per language."""
    return Cell("markdown", {"en": _clean(en), "zh-CN": join_chinese_lines(_clean(zh))})


def code(source: str | None = None, *, en: str | None = None, zh: str | None = None) -> Cell:
    """A code cell: one source for both languages, or one per language (for prose rendered from results)."""
    if source is not None:
        if en is not None or zh is not None:
            raise ValueError("give either one source or en= and zh=, not both")
        return Cell("code", {lang: _clean(source) for lang in LANGUAGES})
    if en is None or zh is None:
        raise ValueError("a per-language code cell needs both en= and zh=")
    return Cell("code", {"en": _clean(en), "zh-CN": _clean(zh)})
