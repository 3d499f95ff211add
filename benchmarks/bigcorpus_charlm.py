"""Peak memory of ``lstmkit train`` on a corpus larger than memory should need: a generated folder of text.

Writes ``--gigabytes`` of text (lines of The Time Machine, shuffled, with some non-ASCII characters) into
``--out/corpus/`` as 64 MB files, then trains on the folder for ``--max-steps`` steps in a child process and
reports its peak resident memory (``getrusage`` of the child: what ``/usr/bin/time -v`` calls "Maximum resident
set size"), its CPU and wall time, and the size of the token file. The first run encodes the corpus (the
progress bar shows it); ``--again`` runs a second time on the cached token file.

    python benchmarks/bigcorpus_charlm.py --out /tmp/big --gigabytes 1 --max-steps 20
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

PIECE = 64 << 20


def write_corpus(folder: Path, gigabytes: float) -> int:
    from lstmkit.apps.charlm import load_corpus

    folder.mkdir(parents=True, exist_ok=True)
    lines = [line + "\n" for line in load_corpus("timemachine").splitlines() if line.strip()]
    lines += ["naïve café — “quoted” 🐕 时间\n"] * 20
    rng = random.Random(0)
    total, index = 0, 0
    target = int(gigabytes * (1 << 30))
    while total < target:
        rng.shuffle(lines)
        block = "".join(lines).encode("utf-8")
        with open(folder / f"part{index:03d}.txt", "wb") as handle:
            written = 0
            while written < PIECE and total < target:
                handle.write(block)
                written += len(block)
                total += len(block)
        index += 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--again", action="store_true", help="also a second run on the cached token file")
    args = parser.parse_args()
    corpus = args.out / "corpus"
    size = sum(p.stat().st_size for p in corpus.glob("*.txt")) if corpus.is_dir() else write_corpus(
        corpus, args.gigabytes)
    results = []
    for attempt in range(2 if args.again else 1):
        run = args.out / "run"
        if attempt == 0:
            subprocess.run(["rm", "-rf", str(run / "best"), str(run / "last"), str(run / "metrics.csv")])
        cmd = [sys.executable, "-c", "from lstmkit.cli import main; raise SystemExit(main())", "train", "--text",
               str(corpus), "--out", str(run), "--max-steps", str(args.max_steps), "--eval-every",
               str(args.max_steps), "--val-fraction", "0.0001", "--threads", "1"]
        if attempt:
            cmd += ["--resume"]
            cmd[cmd.index("--max-steps") + 1] = str(2 * args.max_steps)
            cmd = [c for c in cmd if c not in ("--text", str(corpus), "--val-fraction", "0.0001")]
        wall = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        tokens = sorted((run / "tokens").glob("*.bin"))
        results.append({
            "run": "resume on the cached token file" if attempt else "encode and train",
            "corpus_bytes": size, "steps": args.max_steps * (attempt + 1),
            "peak_rss_mb": round(after.ru_maxrss / 1024, 1),  # Linux: KiB; the largest child so far
            "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "wall_seconds": round(time.monotonic() - wall, 1),
            "token_file_bytes": tokens[0].stat().st_size if tokens else 0,
        })
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
