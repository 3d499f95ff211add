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


# A line break between two Chinese characters shows as a space in rendered Markdown; Chinese text has none.
# Joined: a break after a Chinese character or punctuation mark, before a line that starts no block (list item,
# heading, quote, table row, display math).
_CJK_BREAK = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])\n *(?!\$\$|[-*>#|] |\d+\. )(?=\S)")


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
