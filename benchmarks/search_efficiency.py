"""Benchmark: AutoLoss-Zero's search-efficiency ablation — losses explored per unit of compute.

The paper (FIELD.md) reports naive evolution 1×; + LRP ~700×; + GEC ~1000×; + stop for invalid
loss values ~5000×. This measures the same cumulative ablation on our implementation
(``naive / lrp / gec / invalid_stop / batched / batched_proxy``) and ``multi_fidelity``
(``batched_proxy`` + ASHA rungs: the "+ multi-fidelity" row), side by side in one process;
the configurations and how they are charged are documented in :mod:`lossforge.ablation`, which
``experiments/autoloss_zero.py`` shares.

    python benchmarks/search_efficiency.py            # full run (~5-10 minutes)
    python benchmarks/search_efficiency.py --quick    # a smaller run (under a minute)

The last line printed is one JSON object: ``{"speedup": {config: x}, "s_per_candidate": ...}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import warnings

import torch

from lossforge import tasks
from lossforge.ablation import measure
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.rungs import FidelityConfig


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--metric", default=None, help="default: the task's")
    ap.add_argument("-n", type=int, default=None,
                    help="candidates per funnel configuration (default 100; quick 24)")
    ap.add_argument("--naive-n", type=int, default=None,
                    help="candidates trained by 'naive' (default 10; quick 3)")
    ap.add_argument("--proxy-steps", type=int, default=None,
                    help="proxy training steps (default: the task's; quick 30)")
    ap.add_argument("--lrp-steps", type=int, default=None,
                    help="LRP steps (default 500, FIELD.md; quick 100)")
    ap.add_argument("--lrp-width", type=int, default=None,
                    help="dense tasks: screening probes at most this wide (default 32)")
    ap.add_argument("--min-steps", type=int, default=None,
                    help="multi_fidelity: the shortest rung (default proxy steps / eta)")
    ap.add_argument("--eta", type=int, default=3, help="multi_fidelity: the reduction factor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for everything (default 1: shared small machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the reference checks convert a tensor that requires grad to a float (harmless)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    n = args.n or (24 if args.quick else 100)
    n_naive = args.naive_n or (3 if args.quick else 10)
    task = tasks.get(args.task)
    metric = args.metric or task.default_metric
    steps = args.proxy_steps or (30 if args.quick else task.proxy.steps)
    lrp_steps = args.lrp_steps or (100 if args.quick else LRPConfig().steps)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"lossforge search-efficiency ablation: task {task.name} / {metric}, proxy {steps} steps, "
          f"LRP {lrp_steps} steps; {n} candidates per funnel configuration, {n_naive} for naive "
          f"(seed {args.seed}); torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} CPU(s), {platform.machine()}, load average {load:.1f}", flush=True)
    fidelity = FidelityConfig("asha", min_steps=args.min_steps, max_steps=steps, eta=args.eta)
    out = measure(task, metric, n=n, n_naive=n_naive, steps=steps, lrp_steps=lrp_steps,
                  seed=args.seed, log=lambda line: print(line, flush=True), fidelity=fidelity,
                  lrp_width=args.lrp_width)
    rows, result = out["rows"], out["summary"]
    full_s, loop_s = result["full_training_s"], result["loop_s"]

    print()
    print(f"{'config':14} {'cands':>5} {'wall s':>8} {'charged s':>10} {'s/cand':>8} "
          f"{'speed-up':>9} {'trained':>8} {'fit':>4} {'invalid':>7} {'GEC hits':>8} "
          f"{'agree':>7} {'bound':>7} {'steps':>7}")
    for name, r in rows.items():
        print(f"{name:14} {r['n']:5d} {r['wall_s']:8.1f} {r['charged_s']:10.1f} "
              f"{r['s_per_cand']:8.3f} {r['speedup']:8.1f}x {r['trained']:8d} {r['fit']:4d} "
              f"{'/'.join(map(str, r['invalid'])):>7} {r['gec_hits']:8d} {r['agree'] or '-':>7} "
              f"{'-' if r['bound'] is None else format(r['bound'], '6.1f') + 'x':>7} "
              f"{r['proxy_steps']:7d}")
    print(f"\ntrained: candidates that reached proxy training; fit: those that trained every step; "
          f"invalid: candidates with a non-finite loss value, found by checks/LRP/proxy (the "
          f"funnel's checks, always on, catch most with one evaluation: the early stop acts on the "
          f"rest); bound: candidates / trained, the speed-up's limit when a proxy "
          f"training costs far more than screening (AutoLoss-Zero's segmentation proxies; here "
          f"one training is {full_s:.1f}s). agree: same final status as invalid_stop on the same candidates (lrp: GEC hits of "
          f"invalid_stop left out). Charged = wall + a full-length training ({full_s:.2f}s, median "
          f"of the naive sample's complete trainings) for every training that stopped at an invalid "
          f"value in naive, and the difference to a complete training loop ({loop_s:.2f}s) for "
          f"each in the proxy stage of lrp and gec. multi_fidelity: batched_proxy + ASHA rungs "
          f"{result['fidelity_ladder'][0]} (eta {args.eta}); its trained candidates reached the top "
          f"rung or were pruned below it. steps: proxy-training steps spent. Per-stage seconds:")
    for name, r in rows.items():
        if "stages_s" in r:
            print(f"  {name:14} {r['stages_s']}")
    result = {**result, "load_average": round(load, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
