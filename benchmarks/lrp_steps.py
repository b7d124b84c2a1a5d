"""Benchmark: does the Loss-Rejection Protocol need its 500 steps? (issue 16: with rungs, screening
is most of a search's CPU time, and the LRP is most of screening.)

For each task, random candidates of the task's search space go through the funnel's checks and
GEC (batched, as in a search); those that reach the LRP are scored with the task's calibrated
protocol (:class:`~lossforge.evaluation.lrp.LRPConfig`, 500 steps after
:func:`~lossforge.evaluation.lrp.calibrate`) and with shorter protocols of ``S`` steps, both at the
calibrated learning rate and at ``lr · 500 / S`` (the same summed step). Printed per protocol:
CPU seconds per candidate, and how its accept/reject decisions (at the calibrated threshold)
agree with the 500-step protocol's: agreement, *lost* (accepted by the 500-step protocol,
rejected by the short one) and *extra* (the reverse). A short protocol is worth proposing only
where it loses almost nothing; the timings say how much of the screening it would save.

    python benchmarks/lrp_steps.py                     # digits and shapes-seg, 600 candidates each
    python benchmarks/lrp_steps.py --quick             # tiny (test suite)
    python benchmarks/lrp_steps.py --tasks shapes-seg --steps 200 --spatial 16  # a smaller probe

The last line printed is one JSON object: ``{task: {"reference": {...}, "short": [{steps, lr,
seconds_per_candidate, agreement, lost, extra}, ...], "candidates": n, "accepted": k}}``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from functools import partial

import torch

from lossforge import tasks
from lossforge.evaluation import batched
from lossforge.evaluation.batched.scores import lrp_scores
from lossforge.evaluation.funnel import Funnel, FunnelConfig
from lossforge.evaluation.rung_check import random_survivors


def lrp_inputs(task, funnel: Funnel, n: int, seed: int = 0) -> list:
    """Up to ``n`` distinct random candidates that pass the checks and GEC, batched as in a
    search (what reaches the LRP)."""
    stages = [partial(batched.run_stage, stage) for stage in (funnel.checks, funnel.gec)]
    return random_survivors(task, stages, n, seed=seed, batch=64, rounds=400)


def decisions(exprs: list, funnel: Funnel, config) -> tuple[list[bool], float]:
    """Accept (score ≥ the calibrated threshold) per expression under ``config``, and the CPU
    seconds per expression."""
    lrp = funnel.lrp
    start = time.process_time()
    scores = lrp_scores(exprs, lrp.probe, lrp.metric, config, lrp.init)
    seconds = (time.process_time() - start) / max(1, len(exprs))
    threshold = lrp.config.threshold
    return [done and s is not None and s >= threshold for done, s in scores], seconds


def compare(reference: list[bool], short: list[bool]) -> dict:
    n = len(reference)
    lost = sum(r and not s for r, s in zip(reference, short))
    extra = sum(s and not r for r, s in zip(reference, short))
    return {"agreement": (n - lost - extra) / max(1, n), "lost": lost, "extra": extra}


def one_task(name: str, n: int, lengths: list[int], spatial: list[int] = ()) -> dict:
    task = tasks.get(name)
    funnel = Funnel(task, task.default_metric, FunnelConfig())
    funnel.calibrate()
    config = funnel.lrp.config
    exprs = lrp_inputs(task, funnel, n)
    ref, ref_s = decisions(exprs, funnel, config)
    out = {"candidates": len(exprs), "accepted": sum(ref),
           "reference": {"steps": config.steps, "lr": config.lr, "threshold": config.threshold,
                         "seconds_per_candidate": ref_s},
           "short": []}
    print(f"{name}: {len(exprs)} candidates reach the LRP; the {config.steps}-step protocol "
          f"(lr {config.lr:g}, threshold {config.threshold:.3f}) accepts {sum(ref)} "
          f"({1e3 * ref_s:.1f} ms CPU per candidate)")
    print(f"  {'steps':>5} {'lr':>8} {'ms/cand':>8} {'speed-up':>8} {'agree':>7} {'lost':>5} "
          f"{'extra':>5}")
    for steps in lengths:
        for lr in sorted({config.lr, config.lr * config.steps / steps}):
            dec, sec = decisions(exprs, funnel, replace(config, steps=steps, lr=lr))
            row = {"steps": steps, "lr": lr, "seconds_per_candidate": sec,
                   **compare(ref, dec)}
            out["short"].append(row)
            print(f"  {steps:>5} {lr:>8.3g} {1e3 * sec:>8.1f} {ref_s / max(sec, 1e-9):>7.1f}x "
                  f"{row['agreement']:>7.3f} {row['lost']:>5} {row['extra']:>5}")
    if spatial:
        out["spatial"] = smaller_probes(task, exprs, ref, ref_s, spatial, lengths)
    return out


def smaller_probes(task, exprs: list, ref: list[bool], ref_s: float, sizes: list[int],
                   lengths: list[int]) -> list[dict]:
    """The same candidates' decisions with a dense probe at most ``size`` pixels wide (a funnel
    calibrated on that probe: its own threshold), at the full length and at each of ``lengths``
    with the summed step kept; against the reference decisions ``ref``."""
    rows = []
    for size in sizes:
        base = FunnelConfig()
        funnel = Funnel(task, task.default_metric, replace(base, lrp=replace(base.lrp,
                                                                             spatial_size=size)))
        funnel.calibrate()
        config = funnel.lrp.config
        print(f"  probe width <= {size} (target {tuple(funnel.lrp.probe.target.shape)}, "
              f"threshold {config.threshold:.3f}):")
        for steps in [config.steps, *lengths]:
            dec, sec = decisions(exprs, funnel, config.with_steps(steps))
            row = {"spatial_size": size, "steps": steps, "seconds_per_candidate": sec,
                   **compare(ref, dec)}
            rows.append(row)
            print(f"  {steps:>5} {config.with_steps(steps).lr:>8.3g} {1e3 * sec:>8.1f} "
                  f"{ref_s / max(sec, 1e-9):>7.1f}x {row['agreement']:>7.3f} {row['lost']:>5} "
                  f"{row['extra']:>5}")
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (test suite)")
    ap.add_argument("--tasks", nargs="+", default=["digits", "shapes-seg"])
    ap.add_argument("--candidates", type=int, default=None, help="LRP inputs per task (600)")
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="short protocols' lengths (50 100 200)")
    ap.add_argument("--spatial", type=int, nargs="*", default=[],
                    help="also dense probes at most this wide (the default is 32), e.g. 16")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    n = a.candidates or (24 if a.quick else 600)
    lengths = a.steps or ([50] if a.quick else [50, 100, 200])
    report = {name: one_task(name, n, lengths, a.spatial) for name in a.tasks}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
