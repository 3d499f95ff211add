"""Held-out bits per character after a CPU-time budget: ``lstmkit train`` against a plain char-rnn script.

The plain script is the char-rnn / Dive into Deep Learning recipe written out with torch.nn only: an
embedding (64), ``nn.LSTM`` 2 x 256, a linear decoder, Adam (lr 2e-3), gradient clipping to norm 1, truncated
BPTT over 32 contiguous rows of 100 steps with the state carried from batch to batch, no validation. Both run on
one thread and stop at the same CPU time of their own process (``time.process_time()``), which a machine
shared with other work does not shrink as it does wall-clock time.

Documents (none downloaded; all on a Debian/Ubuntu machine with Python): training = The Time Machine (shipped
with lstmkit) and the licences in /usr/share/common-licenses named in TRAIN; held-out = other licences, in two
sets: TUNE (looked at while choosing the defaults) and FINAL (looked at once, for the last report). Characters
of a held-out text that the training documents lack are removed before scoring, so both models score the same
characters (the plain script has no unknown class).

    python benchmarks/heldout_charlm.py plain --cpu-minutes 2 --out runs/plain2
    python benchmarks/heldout_charlm.py lstmkit --cpu-minutes 2 --out runs/ours2 [-- extra lstmkit train flags]
    python benchmarks/heldout_charlm.py score --out runs/ours2 [--final]

Each prints one JSON line: the bits per character on each held-out set and the CPU seconds used.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LICENSES = Path("/usr/share/common-licenses")
TRAIN = ("Apache-2.0", "GPL-3", "LGPL-2.1", "MPL-2.0", "Artistic", "CC0-1.0")
TUNE = ("GPL-2", "GFDL-1.3")
FINAL = ("MPL-1.1", "LGPL-2", "GFDL-1.2", "BSD", "GPL-1", "LGPL-3")


def training_files(out: Path) -> list[Path]:
    from lstmkit.apps.charlm import load_corpus

    tm = out / "timemachine.txt"
    out.mkdir(parents=True, exist_ok=True)
    tm.write_text(load_corpus("timemachine"), encoding="utf-8")
    return [tm, *(LICENSES / name for name in TRAIN)]


def training_text(out: Path) -> str:
    from lstmkit.apps.charlm import read_texts

    return read_texts(training_files(out))


def heldout(names: tuple[str, ...], known: set[str]) -> str:
    text = "\n".join((LICENSES / name).read_text(encoding="utf-8") for name in names)
    return "".join(ch for ch in text if ch in known)


class PlainLM(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 64)
        self.lstm = nn.LSTM(64, 256, 2)
        self.decoder = nn.Linear(256, vocab)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embedding(ids), state)
        return self.decoder(out), state


@torch.no_grad()
def bits_per_char(model: nn.Module, ids: torch.Tensor) -> float:
    model.eval()
    logits, _ = model(ids[:-1].view(-1, 1))
    nats = F.cross_entropy(logits.flatten(0, 1), ids[1:])
    model.train()
    return float(nats) / math.log(2)


def plain(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    text = training_text(args.out)
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text])
    model = PlainLM(len(chars))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    B, T = 32, 100
    rows = ids[: (len(ids) - 1) // B * B].view(B, -1)
    targets = ids[1 : (len(ids) - 1) // B * B + 1].view(B, -1)
    begin = time.process_time()
    steps, state, position = 0, None, 0
    while time.process_time() - begin < 60 * args.cpu_minutes:
        if position + T > rows.size(1):
            position, state = 0, None
        x = rows[:, position : position + T].t()  # (T, B)
        y = targets[:, position : position + T].t()
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        position += T
        steps += 1
    cpu = time.process_time() - begin
    known = set(chars)
    result = {"model": "plain", "cpu_seconds": round(cpu, 1), "steps": steps}
    for name, names in (("tune", TUNE), ("final", FINAL)):
        if name == "final" and not args.final:
            continue
        held = heldout(names, known)
        result[f"{name}_bits_per_char"] = round(bits_per_char(model, torch.tensor([index[c] for c in held])), 4)
    return result


def lstmkit(args: argparse.Namespace, extra: list[str]) -> dict[str, float]:
    files = training_files(args.out)
    run = args.out / "run"
    cmd = [sys.executable, "-c", "from lstmkit.cli import main; raise SystemExit(main())", "train",
           "--text", *map(str, files), "--out", str(run), "--max-cpu-minutes",
           str(args.cpu_minutes), "--threads", "1", "--quiet", *extra]
    subprocess.run(cmd, check=True)
    return score(args)


def score(args: argparse.Namespace) -> dict[str, float]:
    from lstmkit.apps.charlm import evaluate, load_model

    model, vocab, _ = load_model(args.out / "run" / "last")
    known = set(training_text(args.out))
    result: dict[str, float] = {"model": "lstmkit"}
    metrics = (args.out / "run" / "metrics.csv").read_text().splitlines()
    last = dict(zip(metrics[0].split(","), metrics[-1].split(","), strict=True))
    result["cpu_seconds"], result["steps"] = float(last["cpu_seconds"]), int(last["step"])
    for name, names in (("tune", TUNE), ("final", FINAL)):
        if name == "final" and not args.final:
            continue
        result[f"{name}_bits_per_char"] = round(evaluate(model, vocab, heldout(names, known))["bits_per_char"], 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["plain", "lstmkit", "score"])
    parser.add_argument("--cpu-minutes", type=float, default=4.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--final", action="store_true", help="also score the final held-out set (do this once)")
    args, extra = parser.parse_known_args()
    torch.set_num_threads(1)
    extra = [e for e in extra if e != "--"]
    result = plain(args) if args.what == "plain" else lstmkit(args, extra) if args.what == "lstmkit" else score(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
