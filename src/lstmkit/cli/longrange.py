"""``lstmkit longrange``: train a model on a long-range task (or sweep lengths x models) and report what it
remembers; see :mod:`lstmkit.apps.longrange` and docs/longrange.md."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import engines
from ..apps import longrange
from ..errors import UsageError
from ..synthetic import TASKS
from ..synthetic.base import OPTIMIZERS
from ..train import resolve_device
from .common import add_variant_arguments, device, ranged, variant_kwargs

_positive_int = ranged(int, 1)
_count = ranged(int, 0)
_positive = ranged(float, 0, inclusive=False)
_non_negative = ranged(float, 0)
_number = ranged(float)



def _list(kind: Any, what: str) -> Any:
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [kind(item) for item in items]
    return parse


def _model(text: str) -> str:
    if text not in longrange.MODELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(longrange.MODELS)}, got {text!r}")
    return text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "longrange",
        help="measure what an LSTM remembers and a simple RNN forgets (adding, copy, temporal order, digits)",
        description="Train an LSTM, GRU or tanh RNN on a synthetic long-range task and report whether it "
        "solved it (metric at most 1%% of the chance level on held-out data). 'sweep' runs every length x "
        "model and writes a markdown table and a plot; 'report' runs the lab's whole table (resumable).",
    )
    parser.add_argument("action", nargs="?", choices=["sweep", "report"],
                        help="sweep lengths x models (see --lengths), or the whole report (see --out)")
    parser.add_argument("--task", choices=list(TASKS), default="adding", help="the task (default adding)")
    parser.add_argument("--length", type=_positive_int, default=None, metavar="T",
                        help="the gap to bridge: sequence length (adding, temporal-order), delay (copy), "
                        "distractors (order); default 100 (64 pixels for the digits)")
    parser.add_argument("--model", type=_model, default="lstm", metavar="{lstm,gru,rnn}",
                        help="the recurrent model (default lstm)")
    parser.add_argument("--steps", type=_count, default=None, metavar="N",
                        help="training steps at most (default: the task's, 10000, 60000 for copy; a run stops "
                        "once solved)")
    parser.add_argument("--max-cpu-minutes", type=_non_negative, default=0.0, metavar="M",
                        help="also stop (at a validation) once the run used M CPU minutes (default 0: no limit)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of model and data (default 0)")
    parser.add_argument("--hidden-size", type=_positive_int, default=128, metavar="H", help="default 128")
    parser.add_argument("--num-layers", type=_positive_int, default=1, metavar="L", help="default 1")
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None,
                        help="default: the task's (adamw; rmsprop for copy)")
    parser.add_argument("--lr", type=_positive, default=None,
                        help="learning rate (default: the task's, 3e-3; 1e-3 for copy)")
    parser.add_argument("--weight-decay", type=_non_negative, default=None, metavar="X",
                        help="default: the task's (0.01; 0 for copy)")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                        help="default: the task's (64; 32 for copy)")
    parser.add_argument("--clip", type=_non_negative, default=None,
                        help="max gradient norm, 0 for none (default: the task's, 1.0; 0 for copy)")
    parser.add_argument("--init", choices=list(longrange.INITS), default=longrange.LongRangeConfig.init,
                        help="the LSTM's gate biases: torch.nn's uniform, zeros, forget bias 1 (--forget-bias), or "
                        f"chrono (Tallec & Ollivier 2018); default {longrange.LongRangeConfig.init}")
    parser.add_argument("--chrono-max", type=ranged(int, 2), default=None, metavar="T",
                        help="T_max of --init chrono (default: the task's; its sequence length, 3T/2 for copy)")
    parser.add_argument("--forget-bias", type=_number, default=1.0, metavar="X",
                        help="the forget-gate bias of --init forget1 (default 1)")
    parser.add_argument("--split", choices=["test", "validation"], default=None,
                        help="digits tasks: measure on the test images (default) or on a validation part of the "
                        "training images, to choose settings")
    parser.add_argument("--eval-every", type=_positive_int, default=100, metavar="N",
                        help="validate every N steps (default 100)")
    parser.add_argument("--keep-training", action="store_true",
                        help="train all --steps even after the task is solved")
    parser.add_argument("--engine", choices=list(engines.ENGINE_CHOICES), default="auto",
                        help="lstmkit engine (default auto: torch's fused kernel when it can run the model)")
    parser.add_argument("--device", type=device, default="cpu", help="auto, cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log", metavar="TSV", default=None,
                        help="append 'step<TAB>metric<TAB>cpu_seconds' at every validation, as the run goes")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (a list of them for sweep); no progress bar")
    parser.add_argument("--plot-gradients", metavar="PNG", default=None,
                        help="also plot ||dL/dh_t|| against t for rnn, gru and lstm at initialisation")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--lengths", type=_list(_positive_int, "ints >= 1"), default=None, metavar="T,T,...",
                       help="lengths to sweep (default 50,100,200)")
    sweep.add_argument("--models", type=_list(_model, "models"), default=None, metavar="M,M,...",
                       help="models to sweep (default rnn,gru,lstm)")
    sweep.add_argument("--table", metavar="MD", default=None, help="write the markdown table here too")
    sweep.add_argument("--plot", metavar="PNG", default=None,
                       help="sweep: the plot of metric against length; one run: its learning curve")
    # --forget-bias above sets the forget-gate bias, for the LSTM, with this lab's default of 1.
    add_variant_arguments(parser, "LSTM variants (lstmkit.LSTM arguments; --model lstm only)",
                          dest_prefix="variant_", skip=("forget_bias",))
    report = parser.add_argument_group("report")
    report.add_argument("--out", metavar="DIR", default=None, help="the report's directory (table.md, results.jsonl, "
                        "plots); a report started again with the same DIR continues where it stopped")
    report.add_argument("--budget-cpu-minutes", type=_positive, default=None, metavar="N",
                        help="cap the report at N CPU minutes, split evenly over its runs (default: no cap, "
                        "every run with its task's defaults)")
    report.add_argument("--seeds", type=_positive_int, default=None, metavar="N", help="seeds per cell (default 3)")
    report.add_argument("--quick", action="store_true", help="a small subset on short lengths, for minutes")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace, model: str) -> longrange.LongRangeConfig:
    variants = variant_kwargs(args, "variant_")
    if variants and model != "lstm" and args.action is None:
        flags = ", ".join("--" + name.replace("_", "-") for name in variants)
        raise UsageError(f"{flags}: LSTM variant flags need --model lstm, got --model {model}")
    try:
        return longrange.LongRangeConfig(
            task=args.task, length=args.length, model=model, hidden_size=args.hidden_size,
            num_layers=args.num_layers, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
            batch_size=args.batch_size, clip=args.clip,
            init=args.init, chrono_max=args.chrono_max, forget_bias=args.forget_bias, steps=args.steps,
            eval_every=args.eval_every, seed=args.seed, max_cpu_seconds=60.0 * args.max_cpu_minutes,
            engine=args.engine, device=str(resolve_device(args.device)), stop_when_solved=not args.keep_training,
            variants=variants if model == "lstm" else {},
            task_options={"split": args.split} if args.split else {},
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


def _summary(r: longrange.LongRangeResult) -> str:
    verdict = f"solved at step {r.steps_to_solve}" if r.solved else f"not solved in {r.steps} steps"
    return (f"{r.task} T={r.length} {r.model}: {r.metric} {r.final_metric:.4g} (chance level {r.baseline:.4g}, "
            f"solved at <= {r.threshold:.4g}): {verdict}, {r.seconds:.1f} s")


def _report(result: longrange.LongRangeResult) -> None:
    print(_summary(result), file=sys.stderr, flush=True)


def _logger(path: str) -> Any:
    """Append one line per validation to ``path``, flushed at once: a learning curve a reader can follow."""
    def log(step: int, metric: float, cpu_seconds: float) -> None:
        with open(path, "a") as handle:
            handle.write(f"{step}\t{metric:.6g}\t{cpu_seconds:.1f}\n")
    return log


def run(args: argparse.Namespace) -> int:
    if args.action != "sweep":
        for flag in ("lengths", "models", "table") + (("plot",) if args.action else ()):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} is for 'lstmkit longrange sweep'")
    if args.split is not None and not args.task.startswith("digits"):
        raise UsageError(f"--split is for the digits tasks, got --task {args.task}")
    if args.action is not None and args.log is not None:
        raise UsageError("--log is for a single run (no 'sweep' or 'report')")
    if args.action != "report":
        for flag in ("out", "budget_cpu_minutes", "seeds"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} is for 'lstmkit longrange report'")
        if args.quick:
            raise UsageError("--quick is for 'lstmkit longrange report'")
    elif args.out is None:
        raise UsageError("lstmkit longrange report needs --out DIR")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.json and sys.stderr.isatty()
    if args.action == "report":
        from ..apps.longrange_report import report

        if args.threads is None:
            torch.set_num_threads(1)  # CPU time per run is then a fair measure on a shared machine
        table = report(args.out, budget_cpu_minutes=args.budget_cpu_minutes, seeds=args.seeds or 3,
                       quick=args.quick, progress=progress)
        print(table, end="")
        return 0
    config = _config(args, args.model)

    if args.action == "sweep":
        try:
            results = longrange.sweep(config, args.lengths or [50, 100, 200], args.models or ["rnn", "gru", "lstm"],
                                      progress=progress, on_result=None if args.json else _report)
        except ValueError as error:
            raise UsageError(str(error)) from None
        table = longrange.sweep_table(results)
        if args.table:
            from ..fileio import atomic_write

            with atomic_write(args.table) as handle:
                handle.write(table)
        if args.plot:
            longrange.plot_sweep(results, args.plot)
        if args.json:
            print(json.dumps([r.to_dict() for r in results]))
        else:
            print(table, end="")
    elif config.steps or not args.plot_gradients:
        result = longrange.train(config, progress=progress, log=_logger(args.log) if args.log else None)
        if args.plot:
            longrange.plot_history([result], args.plot)
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            print(_summary(result))
    if args.plot_gradients:
        flows = longrange.gradient_flow(config)
        longrange.plot_gradient_flow(flows, args.plot_gradients,
                                     title=f"{args.task}, T={config.length}: ||dL/dh_t|| at initialisation")
        if not args.json:
            for name, norms in flows.items():
                print(f"{name}: ||dL/dh_t|| {norms[0]:.3g} at t=0, {norms[-1]:.3g} at t={len(norms) - 1}")
    return 0
