"""Write the course notebooks from ``chapters/`` and, with ``--execute``, run them and store their outputs.

    python notebooks/build.py --execute              # every chapter, both languages (what is committed)
    python notebooks/build.py --execute --only 02    # one chapter
    python notebooks/build.py --reuse-outputs        # prose changed, code not: keep the stored outputs
    python notebooks/build.py                        # sources only, outputs cleared

Each chapter is one module in ``chapters/``: its code cells are shared by both languages, its prose is written
once in English and once in Chinese. The notebooks run in a temporary folder, so nothing is written beside
them; each one's wall and CPU time is printed as it finishes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import nbformat

HERE = Path(__file__).resolve().parent
CHAPTERS = ("ch01_equations", "ch02_charlm", "ch03_inspect", "ch04_longrange", "ch05_questions")
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def chapters(only: list[str] | None = None) -> list[ModuleType]:
    """The chapter modules, in order; ``only``: chapter numbers ("02") or module names to keep."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    names = [name for name in CHAPTERS if not only or any(name[2:].startswith(key) or name == key for key in only)]
    return [importlib.import_module(f"chapters.{name}") for name in names]


def notebook(chapter: ModuleType, lang: str) -> nbformat.NotebookNode:
    """The notebook of ``chapter`` in ``lang`` ("en" or "zh-CN"), without outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNEL), "language_info": {"name": "python"}}
    comments = getattr(chapter, "ZH_COMMENTS", {}) if lang == "zh-CN" else {}
    unused = set(comments)
    for cell in chapter.CELLS:
        if cell.kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.text[lang]))
            continue
        source = cell.text[lang]
        for english, chinese in comments.items():  # comments and docstrings only: the code itself is shared
            if english in source:
                source = source.replace(english, chinese)
                unused.discard(english)
        nb.cells.append(nbformat.v4.new_code_cell(source))
    if unused:
        raise ValueError(f"{chapter.__name__}.ZH_COMMENTS: not found in any code cell: {sorted(unused)}")
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"{chapter.SLUG[:2]}-{index:03d}"  # stable ids: a rebuild changes only what changed
    return nb


def path_of(chapter: ModuleType, lang: str) -> Path:
    return HERE / lang / f"{chapter.SLUG}.ipynb"


def execute(nb: nbformat.NotebookNode, timeout: int = 1200) -> tuple[float, float]:
    """Run ``nb`` in place in a fresh kernel, in a temporary folder; return (wall seconds, CPU seconds)."""
    from nbclient import NotebookClient

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lstmkit-notebook-") as folder:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": folder}}).execute()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


# torch.profiler (lstmkit.memory.measure_peak_bytes) logs a start and a stop line on stderr for every measurement;
# they say nothing to a reader, so the stored outputs leave them out (chapter 5 says so where it happens).
PROFILER_LINE = re.compile(r"^USDT:.*profiler_(start|stop)\s*$")


def clean_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """Drop the profiler's log lines from ``nb``'s outputs; return the stderr text that remains."""
    remaining = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                text = "".join(line for line in output.text.splitlines(keepends=True)
                               if not PROFILER_LINE.match(line.strip()))
                if not text.strip():
                    continue
                output.text = text
                remaining.append(text)
            kept.append(output)
        cell.outputs = kept
    return remaining


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write ``nb`` to ``path`` through a temporary file, so a failed run leaves the old notebook whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            nbformat.write(nb, handle)
        os.chmod(temp, 0o644)  # mkstemp makes it private; a notebook is for every reader
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def reuse_outputs(nb: nbformat.NotebookNode, path: Path) -> None:
    """Give ``nb`` the outputs stored in ``path``, whose code cells must be the same, in the same order."""
    old = nbformat.read(path, as_version=4)
    old_code = [cell for cell in old.cells if cell.cell_type == "code"]
    new_code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if [c.source for c in old_code] != [c.source for c in new_code]:
        raise SystemExit(f"{path}: its code cells changed; run it again with --execute")
    for new, stored in zip(new_code, old_code, strict=True):
        new.outputs, new.execution_count = stored.outputs, stored.execution_count
    nb.metadata = old.metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run each notebook and store its outputs")
    parser.add_argument("--reuse-outputs", action="store_true",
                        help="keep the outputs stored in the notebooks (only when no code cell changed)")
    parser.add_argument("--only", nargs="*", default=[], help="chapter numbers to build, e.g. 01 03 (default: all)")
    parser.add_argument("--lang", nargs="*", default=["en", "zh-CN"], choices=["en", "zh-CN"])
    args = parser.parse_args(argv)
    for chapter in chapters(args.only):
        for lang in args.lang:
            nb = notebook(chapter, lang)
            path = path_of(chapter, lang)
            if args.reuse_outputs and not args.execute:
                reuse_outputs(nb, path)
            if args.execute:
                wall, cpu = execute(nb)
                print(f"{path.relative_to(HERE)}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
                for text in clean_outputs(nb):
                    print(f"  stderr kept in {path.name}: {text.strip()[:300]}", flush=True)
            write(nb, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
