"""``lstmkit train``: train a character-level LSTM language model on text files or a built-in corpus."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..apps import charlm
from ..checkpoint import LAST, Checkpoint
from ..engines import ENGINE_CHOICES
from ..errors import UsageError
from ..train import OPTIMIZERS, SCHEDULES, TrainConfig, resolve_device
from ..variants import REGISTRY
from .common import add_variant_arguments, device, ranged


def _field(group: argparse._ArgumentGroup, flag: str, section: str, name: str, kind: Any, help: str,
           **kwargs: Any) -> None:
    """A flag that sets the config field ``section.name``; every default lives in the dataclasses."""
    if "choices" not in kwargs:
        kwargs["metavar"] = name.upper()
    group.add_argument(flag, dest=f"{section}.{name}", type=kind, default=argparse.SUPPRESS, help=help, **kwargs)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train a character-level LSTM language model",
        description="Train a character-level LSTM language model (embedding -> lstmkit.LSTM -> linear decoder) "
                    "with truncated BPTT. Checkpoints (best/, last/), metrics.csv and curves.png go in --out. "
                    "Runs data-parallel under torchrun.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", nargs="+", metavar="FILE", help="UTF-8 text files to train on")
    src.add_argument("--corpus", choices=list(charlm.CORPORA),
                     help="a built-in corpus (default: timemachine; `lstmkit corpora` lists them)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: checkpoints, metrics, curves")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--recipe", choices=["d2l"],
                   help="d2l: Dive into Deep Learning's LSTM on The Time Machine (one-hot, 1x256, SGD lr 1, "
                        "35 steps, batch 32, 500 epochs); other flags still override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=ranged(int, 1), default=None,
                   help="CPU threads for torch (default: torch's choice); 1 is fastest on a busy machine")

    g = p.add_argument_group("data")
    _field(g, "--preprocess", "data", "preprocess", str, "none, or d2l: letters only, lowercased, other runs "
           "one space", choices=list(charlm.PREPROCESS))
    _field(g, "--val-fraction", "data", "val_fraction", ranged(float, 0, 1, inclusive=False),
           "held-out tail (default 0.1)")
    _field(g, "--train-chars", "data", "train_chars", ranged(int, 0), "train on the first N characters only")
    _field(g, "--vocab", "data", "vocab", str, "chars: the training characters, the rarest as one unknown class "
           "(default); bytes: UTF-8 bytes, 256 symbols", choices=list(charlm.VOCABS))
    _field(g, "--eval-tokens", "data", "eval_tokens", ranged(int, 1), "validation tokens each evaluation scores: "
           f"the same sample every time, spread over the held-out part ({charlm.EVAL_TOKENS:,})")

    g = p.add_argument_group("model")
    _field(g, "--embedding-dim", "model", "embedding_dim", ranged(int, 0), "embedding size; 0 for one-hot (64)")
    _field(g, "--hidden-size", "model", "hidden_size", ranged(int, 1), "LSTM hidden size (256)")
    _field(g, "--num-layers", "model", "num_layers", ranged(int, 1), "stacked LSTM layers (2)")
    _field(g, "--dropout", "model", "dropout", ranged(float, 0, 1), "dropout between layers (0)")
    _field(g, "--proj-size", "model", "proj_size", ranged(int, 0), "LSTM projection size, 0 for none")
    g.add_argument("--no-bias", dest="model.bias", action="store_false", default=argparse.SUPPRESS,
                   help="LSTM without biases")
    _field(g, "--engine", "model", "engine", str, "lstmkit engine (auto)", choices=list(ENGINE_CHOICES))
    add_variant_arguments(p, dest_prefix="variants.")  # into the model config's ``variants`` mapping

    g = p.add_argument_group("training")
    _field(g, "--seq-len", "train", "seq_len", ranged(int, 1), "BPTT steps per batch (64)")
    _field(g, "--batch-size", "train", "batch_size", ranged(int, 1), "rows per batch, per process (16)")
    _field(g, "--optimizer", "train", "optimizer", str, "adamw or sgd", choices=list(OPTIMIZERS))
    _field(g, "--lr", "train", "lr", ranged(float, 0, inclusive=False), "learning rate (6e-3)")
    _field(g, "--weight-decay", "train", "weight_decay", ranged(float, 0), "weight decay (0.01)")
    _field(g, "--clip", "train", "clip", ranged(float, 0), "clip gradients to this norm, 0 for none (1.0)")
    _field(g, "--schedule", "train", "schedule", str, "learning-rate schedule (auto: cosine over the steps or "
           "the time limit when one is set, else halve on plateau)", choices=list(SCHEDULES))
    _field(g, "--warmup-steps", "train", "warmup_steps", ranged(int, 0), "linear warm-up steps (0)")
    _field(g, "--max-steps", "train", "max_steps", ranged(int, 0), "stop after N steps")
    _field(g, "--max-epochs", "train", "max_epochs", ranged(int, 0), "stop after N epochs")
    _field(g, "--max-minutes", "train", "max_minutes", ranged(float, 0), "stop after M minutes")
    _field(g, "--max-cpu-minutes", "train", "max_cpu_minutes", ranged(float, 0),
           "stop after M minutes of this process's CPU time (a budget a shared machine does not shrink)")
    _field(g, "--eval-every", "train", "eval_every", ranged(int, 0), "validate every N steps, 0: every epoch (100)")
    _field(g, "--patience", "train", "patience", ranged(int, 0), "early stopping: evaluations without "
           "improvement, 0 for never (10)")
    _field(g, "--seed", "train", "seed", int, "seed: same seed, same run on CPU (0)")
    g.add_argument("--skip-nonfinite", dest="train.skip_nonfinite", action="store_true", default=argparse.SUPPRESS,
                   help="skip a step whose loss or gradient is NaN/inf (default: stop the run there)")
    _field(g, "--device", "train", "device", device, "auto, cpu, cuda, cuda:N (auto)")
    p.set_defaults(func=run)


# Flags that may change when a run is resumed: how long it goes on, and where.
RESUMABLE = {("train", "max_steps"), ("train", "max_epochs"), ("train", "max_minutes"), ("train", "max_cpu_minutes"),
             ("train", "patience"), ("train", "device"), ("train", "skip_nonfinite")}


def build_run(args: argparse.Namespace) -> charlm.RunConfig:
    """The run's config from the flags given (over the recipe, over the defaults); UsageError if inconsistent."""
    given = {tuple(key.split(".", 1)): value for key, value in vars(args).items() if "." in key}
    if args.recipe == "d2l":
        model, data, train = charlm.d2l_recipe()
    else:
        model, data, train = charlm.CharLMConfig(vocab_size=1), charlm.DataConfig(), TrainConfig()
    if args.text:
        data = dataclasses.replace(data, corpus=None, texts=tuple(args.text))
    elif args.corpus:
        data = dataclasses.replace(data, corpus=args.corpus, texts=())
    variants = {**model.variants, **{name: value for (sec, name), value in given.items() if sec == "variants"}}
    sections = {"model": model, "data": data, "train": train}
    try:
        sections["model"] = dataclasses.replace(model, variants=variants)
        for section in sections:
            changes = {name: value for (sec, name), value in given.items() if sec == section}
            sections[section] = dataclasses.replace(sections[section], **changes)  # type: ignore[type-var]
    except ValueError as error:
        raise UsageError(str(error)) from None
    return charlm.RunConfig(model=sections["model"], data=sections["data"], train=sections["train"])  # type: ignore[arg-type]


def resumed_run(args: argparse.Namespace, out: Path) -> tuple[charlm.RunConfig, Checkpoint]:
    """The saved run's config, with only the limits and device the flags change, and its ``last/`` (read once);
    UsageError on a conflict."""
    saved, checkpoint = charlm.load_run(out)
    given = {tuple(key.split(".", 1)): value for key, value in vars(args).items() if "." in key}
    if args.recipe or args.text or args.corpus:
        raise UsageError("--resume takes the run's text and recipe from its checkpoint; drop --text/--corpus/--recipe")
    sections = {"model": saved.model, "data": saved.data, "train": saved.train}
    for (section, name), value in given.items():
        if section == "variants":
            old = saved.model.variants.get(name, REGISTRY[name].default)
        else:
            old = getattr(sections[section], name)
        if (section, name) not in RESUMABLE and value != old:
            flag = REGISTRY[name].flag if section == "variants" else (
                "--" + name.replace("_", "-") if name != "bias" else "--no-bias")
            raise UsageError(
                f"{flag} {value} differs from the run being resumed ({old}); drop it, or start a new --out"
            )
    changes = {name: value for (section, name), value in given.items() if section == "train"}
    try:
        train = dataclasses.replace(saved.train, **changes)
        resolve_device(train.device)  # --device was checked by its type; the saved device may not exist here
    except ValueError as error:
        raise UsageError(str(error)) from None
    return dataclasses.replace(saved, train=train), checkpoint


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    saved = None
    if args.resume:
        run_config, saved = resumed_run(args, out)
    else:
        run_config = build_run(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = charlm.train_charlm(run_config, out, resume=args.resume, progress=not args.quiet, saved=saved)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports for all
    best = result.best_val_loss
    print(f"trained {result.steps} steps ({result.epochs:.2f} epochs, {result.seconds:.0f} s, stopped by "
          f"{result.stopped}); best validation: {best / math.log(2):.3f} bits/char, perplexity "
          f"{math.exp(min(best, 50)):.3f}; checkpoints in {out / 'best'} and {out / LAST}")
    return 0
