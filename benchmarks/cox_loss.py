"""Forward + backward time of Cox losses, n = 1e3 ... 1e6, side by side.

Compares fracsurv's exact Efron and Breslow losses with pycox's ``cox_ph_loss``
(ignores ties) and torchsurv's Efron loss, on the same tensors in the same run.
Times are the median of ``--repeats`` runs after one warm-up.

Usage: ``python benchmarks/cox_loss.py [--max-n 1000000] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _common import write_json

from fracsurv.survival import cox_nll


def _peers() -> dict[str, Callable[..., torch.Tensor]]:
    fns: dict[str, Callable[..., torch.Tensor]] = {
        "fracsurv_efron": lambda x, t, e: cox_nll(x, t, e, ties="efron"),
        "fracsurv_breslow": lambda x, t, e: cox_nll(x, t, e, ties="breslow"),
    }
    try:
        from pycox.models.loss import cox_ph_loss

        fns["pycox_cox_ph_loss_no_ties"] = lambda x, t, e: cox_ph_loss(x, t, e.float())
    except ImportError:
        print("pycox not installed (pip install -e .[bench]); skipped")
    try:
        from torchsurv.loss.cox import neg_partial_log_likelihood

        fns["torchsurv_efron"] = lambda x, t, e: neg_partial_log_likelihood(
            x, e, t, ties_method="efron")
    except ImportError:
        print("torchsurv not installed (pip install -e .[bench]); skipped")
    return fns


def _time(fn: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor, e: torch.Tensor,
          repeats: int) -> float:
    runs = []
    for i in range(repeats + 1):
        xi = x.detach().clone().requires_grad_()
        t0 = time.perf_counter()
        fn(xi, t, e).backward()
        if i:  # first run is a warm-up
            runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--distinct-times", type=int, default=1000,
                        help="number of distinct times (fewer -> heavier ties)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    fns = _peers()
    rows = []
    n = 1000
    while n <= args.max_n:
        x = torch.randn(n)
        t = torch.randint(1, args.distinct_times + 1, (n,)).float()
        e = torch.rand(n) < 0.3
        row = {"n": n}
        for name, fn in fns.items():
            row[name] = _time(fn, x, t, e, args.repeats)
        rows.append(row)
        print(row)
        n *= 10
    largest = rows[-1]
    summary = {
        "n": largest["n"],
        "efron_seconds": largest["fracsurv_efron"],
        "pycox_seconds": largest.get("pycox_cox_ph_loss_no_ties"),
    }
    if summary["pycox_seconds"]:
        summary["efron_over_pycox"] = summary["efron_seconds"] / summary["pycox_seconds"]
        summary["target_met"] = summary["efron_over_pycox"] <= 1.0
    write_json("cox_loss", {"settings": vars(args), "rows": rows, "summary": summary}, args.out)


if __name__ == "__main__":
    main()
