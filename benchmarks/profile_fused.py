"""Where the fused engine's time goes: GEMMs against the rest, forward (no_grad) and a training step.

``torch.profiler``'s self CPU time per operator over 5 calls after 3 warm-ups, at the bar sizes of
docs/benchmarks.md (T=100, B=64 H=256 and B=16 H=512, I = H/2). The recurrent step GEMMs show as
``mkldnn::_linear_pointwise`` (oneDNN, prepacked weight) or ``aten::mm``, the input projection as ``aten::addmm``,
the kernel's own pointwise code as ``lstmkit_kernel::forward``/``backward``.

    python benchmarks/profile_fused.py [--threads N]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

import lstmkit

GEMM_KEYS = ("mm", "linear", "matmul", "mkldnn")


def step_fn(model: lstmkit.LSTM, x: Tensor, mode: str) -> Callable[[], None]:
    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def train() -> None:
        model.train()
        model(x)[0].sum().backward()

    return forward if mode == "fwd" else train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for T, B, H in ((100, 64, 256), (100, 16, 512)):
        model = lstmkit.LSTM(H // 2, H, engine="fused")
        x = torch.randn(T, B, H // 2)
        for mode in ("fwd", "train"):
            step = step_fn(model, x, mode)
            for _ in range(3):
                step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    step()
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            gemm = sum(e.self_cpu_time_total for e in events if any(k in e.key for k in GEMM_KEYS))
            print(f"T={T} B={B} H={H} {mode}: GEMMs {gemm / total:.0%} of {total / 5 / 1000:.1f} ms per call")
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]:
                share = e.self_cpu_time_total / total
                print(f"    {e.key:45s} {e.self_cpu_time_total / 5 / 1000:8.2f} ms  ({share:.0%})")


if __name__ == "__main__":
    main()
