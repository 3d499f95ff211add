"""``lstmkit corpora``: list the built-in corpora ``lstmkit train --corpus`` takes (none is downloaded)."""

from __future__ import annotations

import argparse
from typing import Any

from ..apps import charlm


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("corpora", help="list the built-in text corpora",
                              description="List the built-in corpora for `lstmkit train --corpus NAME`.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(charlm.describe_corpora())
    return 0
