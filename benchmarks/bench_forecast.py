"""Forecasting benchmarks: the M3/M1 tables of docs/forecast.md, the ablation, and a many-series memory check.

    python benchmarks/bench_forecast.py m3 --out runs/m3            # every M3 subset, all methods (the extra)
    python benchmarks/bench_forecast.py ablation --subset yearly --seeds 0,1,2   # variants alone, a line each
    python benchmarks/bench_forecast.py scale --series 10000 --length 100   # peak memory of `forecast train --id`

Times are wall-clock seconds of this process, CPU seconds beside them (``time.process_time``, one torch thread
unless ``--threads``), which is the fair measure on a shared machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lstmkit.apps.forecast import competition as C

LSTMKIT = [sys.executable, "-c", "from lstmkit.cli import main; raise SystemExit(main())"]
# ForecastConfig settings over the subset's benchmark defaults (docs/forecast.md's ablation); --variants replaces it
ABLATION = {
    "one network, lr 3e-3, batches of 256": {"ensemble": 1, "lr": 3e-3, "batch_size": 256},
    "one network, lr 1e-2, batches of 256": {"ensemble": 1, "lr": 1e-2, "batch_size": 256},
    "one network, lr 1e-2, batches of 64": {"ensemble": 1, "lr": 1e-2, "batch_size": 64},
    "the subset's defaults": {},
}


def m3(args: argparse.Namespace) -> None:
    subsets = args.subsets.split(",")
    for subset in subsets:
        out = Path(args.out) / f"{args.dataset}-{subset}"
        cmd = LSTMKIT + ["forecast", "benchmark", "--dataset", args.dataset, "--subset",
               subset, "--out", str(out), "--threads", str(args.threads), "--quiet", *args.extra]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def ablation(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    series = C.load_dataset(args.dataset, args.subset)
    base = json.loads(args.base)
    variants = json.loads(args.variants) if args.variants else ABLATION
    for name, kw in variants.items():
        for seed in (int(s) for s in args.seeds.split(",")):
            cpu, wall = time.process_time(), time.monotonic()
            config = C.default_config(args.dataset, args.subset, **{**base, **kw, "seed": seed})
            result = C.run_benchmark(series, config, methods=[])
            m = result["methods"]["lstmkit"]
            print(f"| {args.dataset} {args.subset} | {name} | {seed} | {m['smape']:.2f} | {m['mase']:.3f} | "
                  f"{m['owa']:.3f} | {time.process_time() - cpu:.0f} | {time.monotonic() - wall:.0f} |", flush=True)


def scale(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["unique_id", "ds", "y"])
            t = np.arange(args.length)
            for k in range(args.series):
                level, amp = rng.uniform(10, 1000), rng.uniform(0, 0.3)
                y = level * (1 + amp * np.sin(2 * np.pi * t / 12)) * (1 + rng.normal(0, 0.05, args.length))
                writer.writerows([f"id{k}", i, f"{v:.3f}"] for i, v in zip(t, y, strict=True))
        print(f"{args.series} series x {args.length} points: {path.stat().st_size / 2**20:.0f} MiB of CSV", flush=True)
        wall = time.monotonic()
        cmd = LSTMKIT + ["forecast", "train", "--csv", str(path), "--id", "unique_id",
               "--time", "ds", "--target", "y", "--horizon", "12", "--season", "12", "--epochs", str(args.epochs),
               *(["--max-minutes", str(args.max_minutes)] if args.max_minutes else []),
               "--out", str(Path(tmp) / "run"), "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        metrics = json.loads(done.stdout)
        print(f"trained in {time.monotonic() - wall:.0f} s wall, peak resident memory {peak:.0f} MiB, "
              f"{metrics['training']['windows']} windows, sMAPE {metrics['smape']:.2f} "
              f"(naive {metrics['baselines']['naive']['smape']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("m3")
    p.add_argument("--dataset", default="m3")
    p.add_argument("--subsets", default="yearly,quarterly,monthly,other")
    p.add_argument("--out", default="runs/m3")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("extra", nargs="*", help="more flags for `lstmkit forecast benchmark` (after --)")
    p.set_defaults(func=m3)
    p = sub.add_parser("ablation")
    p.add_argument("--dataset", default="m3")
    p.add_argument("--subset", default="quarterly")
    p.add_argument("--base", default="{}", help="ForecastConfig settings for every variant, as JSON")
    p.add_argument("--variants", help="{name: ForecastConfig settings} as JSON (default: the ABLATION table)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=ablation)
    p = sub.add_parser("scale")
    p.add_argument("--series", type=int, default=10000)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-minutes", type=float, help="stop training after this long (memory peaks before)")
    p.set_defaults(func=scale)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
