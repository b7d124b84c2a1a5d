"""Benchmark: population-vectorised screening (``evaluation.batched``) vs the per-candidate path.

On seeded random expressions of the ``autoloss-zero`` space, measures candidates/s of the
reference path (the stage's ``__call__``, timed on a subsample: it is slow) and of
``batched.run_stage`` (on every candidate), side by side in one process, for

* GEC fingerprints (classification probe, 8 samples x 10 classes);
* LRP, classification probe (5 samples x 10 classes, 500 SGD steps, lr 1e-3, momentum 0.9,
  threshold 0.6 on accuracy: the FIELD.md defaults);
* LRP, segmentation probe (2 x 7 x 32 x 32 with some ignored pixels, 200 steps, mIoU);

plus the agreement of the accept/reject decisions on the subsample (GEC: identical fingerprints),
the checks stage, and the peak RSS. The reference runs are split in two halves timed before and
after the batched run, so that a change of machine load affects both sides alike.

    python benchmarks/screening.py            # 1,000 candidates (several minutes)
    python benchmarks/screening.py --quick    # a smaller run (under a minute)
    python benchmarks/screening.py --processes 2   # + the LRPs shared by 2 CPU processes

The last line printed is one JSON object with the headline numbers.
"""
from __future__ import annotations

import argparse
import json
import warnings
import os
import platform
import resource
import time

import numpy as np
import torch

from lossforge import metrics as M
from lossforge.evaluation import batched
from lossforge.evaluation.candidate import Candidate
from lossforge.evaluation.checks import Checks
from lossforge.evaluation.gec import GradientEquivalence
from lossforge.evaluation.lrp import LossRejection, LRPConfig
from lossforge.evaluation.probes import synthetic_probe
from lossforge.expr import spaces, variation
from lossforge.tasks import Metric


def population(n: int, seed: int):
    space = spaces.get("autoloss-zero", variables=["p", "y"])
    rng = np.random.default_rng(seed)
    return [variation.random_expr(space, rng) for _ in range(n)]


def subsample(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, num=min(k, n)).round().astype(int).tolist()))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def compare(name, make_stage, exprs, sub, decision, chunk=None, threads=1):
    """Time the reference on ``sub`` (two halves around the batched run) and the batched path
    on every expression; returns a result row."""
    half = len(sub) // 2
    ref_cands = {i: Candidate(exprs[i]) for i in sub}

    def ref_part(idx):
        stage = make_stage()
        t = time.perf_counter()
        for i in idx:   # one candidate per call: what the per-candidate path costs
            stage([ref_cands[i]])
        return time.perf_counter() - t

    t_ref = ref_part(sub[:half])
    stage = make_stage()
    cands = [Candidate(e) for e in exprs]
    rss0 = peak_rss_mib()
    batched.clear_cache()   # no compiled expressions from an earlier stage: time it all
    t = time.perf_counter()
    batched.run_stage(stage, cands, chunk=chunk, threads=threads)
    t_bat = time.perf_counter() - t
    t_ref += ref_part(sub[half:])
    same = sum(decision(ref_cands[i]) == decision(cands[i]) for i in sub)
    ref_rate, bat_rate = len(sub) / t_ref, len(exprs) / t_bat
    return {"stage": name, "ref_n": len(sub), "ref_s": t_ref, "ref_per_s": ref_rate,
            "bat_n": len(exprs), "bat_s": t_bat, "bat_per_s": bat_rate,
            "speedup": bat_rate / ref_rate, "same": same, "compared": len(sub),
            "passed": sum(not c.done for c in cands), "stats": stage.stats.to_dict(),
            "rss_before_mib": rss0, "rss_after_mib": peak_rss_mib()}


def parallel(make_stage, exprs, processes: int, threads: int, repeats: int = 2) -> dict:
    """The batched LRP on one process vs on ``processes`` (``run_stage(processes=)``: shares in
    forked children), alternated ``repeats`` times so that load changes affect both alike."""
    seconds = {1: 0.0, processes: 0.0}
    decisions = {}
    for _ in range(repeats):
        for k in (1, processes):
            cands = [Candidate(e) for e in exprs]
            batched.clear_cache()
            t = time.perf_counter()
            batched.run_stage(make_stage(), cands, threads=threads, processes=k)
            seconds[k] += time.perf_counter() - t
            decisions[k] = [c.status for c in cands]
    n = repeats * len(exprs)
    return {"processes": processes, "one_per_s": n / seconds[1],
            "parallel_per_s": n / seconds[processes],
            "ratio": seconds[1] / seconds[processes],
            "same": decisions[1] == decisions[processes],
            "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    ap.add_argument("-n", type=int, default=None, help="candidates (default 1000; quick 200)")
    ap.add_argument("--ref", type=int, default=None,
                    help="reference subsample for LRP classification (default 40; quick 8)")
    ap.add_argument("--seg-n", type=int, default=None,
                    help="candidates of the segmentation LRP (default: all; quick 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads of both paths (default 1: on a shared machine, "
                         "OpenMP threads that wait for a busy core stall every parallel kernel)")
    ap.add_argument("--processes", type=int, default=1,
                    help="also time the batched LRPs (classification, segmentation) shared by "
                         "this many CPU processes (run_stage(processes=N)) against one process")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the reference checks convert a tensor that requires grad to a float (harmless)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    n = args.n or (200 if args.quick else 1000)
    k_lrp = args.ref or (8 if args.quick else 40)
    n_seg = min(n, args.seg_n or (60 if args.quick else n))
    k_seg = max(3, k_lrp // 4)
    k_gec = max(20, 4 * k_lrp)
    exprs = population(n, args.seed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"lossforge screening benchmark: {n} random autoloss-zero expressions (seed "
          f"{args.seed}); torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} CPU(s), {platform.machine()}, load average {load:.1f}", flush=True)

    accuracy = Metric("accuracy", M.accuracy)
    cls = synthetic_probe("classification", 5, 10, seed=101)
    gec_probe = synthetic_probe("classification", 8, 10, seed=102)
    seg = synthetic_probe("classification", 2, 7, seed=103, spatial=(32, 32))
    seg.target[0, :3, :] = 255          # a few ignored rows
    seg.target[1, :, -2:] = 255
    miou = Metric("miou", lambda p, t: M.miou(p, t, 7))
    cls_cfg = LRPConfig()                                       # 500 steps, lr 1e-3, m 0.9
    seg_cfg = LRPConfig(steps=200, threshold=0.01)

    status = (lambda c: c.status)
    t = args.threads
    rows = [
        compare("checks", lambda: Checks(gec_probe), exprs, subsample(n, k_gec), status,
                threads=t),
        compare("gec", lambda: GradientEquivalence(gec_probe), exprs, subsample(n, k_gec),
                lambda c: c.fingerprint, threads=t),
        compare("lrp-cls", lambda: LossRejection(cls, accuracy, cls_cfg), exprs,
                subsample(n, k_lrp), status, threads=t),
        compare("lrp-seg", lambda: LossRejection(seg, miou, seg_cfg), exprs[:n_seg],
                subsample(n_seg, k_seg), status, threads=t),
    ]
    print()
    print(f"{'stage':8} {'reference (per candidate)':>27} {'batched':>26} {'speedup':>8} "
          f"{'agree':>9} {'passed':>7} {'peak RSS':>9}")
    for r in rows:
        print(f"{r['stage']:8} {r['ref_per_s']:10.2f}/s ({r['ref_n']:4d} in {r['ref_s']:6.1f}s) "
              f"{r['bat_per_s']:10.1f}/s ({r['bat_n']:5d} in {r['bat_s']:6.1f}s) "
              f"{r['speedup']:7.1f}x {r['same']:4d}/{r['compared']:<4d} {r['passed']:7d} "
              f"{r['rss_after_mib']:5.0f} MiB")
    par = par_seg = None
    if args.processes > 1:
        par = parallel(lambda: LossRejection(cls, accuracy, cls_cfg), exprs, args.processes, t)
        par_seg = parallel(lambda: LossRejection(seg, miou, seg_cfg), exprs[:min(n_seg, 200)],
                           args.processes, t)
        for name, r in (("lrp-cls", par), ("lrp-seg", par_seg)):
            print(f"{name} on {r['processes']} processes: {r['parallel_per_s']:.1f}/s vs "
                  f"{r['one_per_s']:.1f}/s on one ({r['ratio']:.2f}x, alternated twice; same "
                  f"decisions: {r['same']}; largest child {r['children_peak_rss_mib']:.0f} MiB)")
    agree_n = sum(r["same"] for r in rows if r["stage"] != "checks")
    total = sum(r["compared"] for r in rows if r["stage"] != "checks")
    by = {r["stage"]: r for r in rows}
    result = {
        "gec_speedup": round(by["gec"]["speedup"], 2),
        "lrp_cls_speedup": round(by["lrp-cls"]["speedup"], 2),
        "lrp_seg_speedup": round(by["lrp-seg"]["speedup"], 2),
        "lrp_cls_batched_per_s": round(by["lrp-cls"]["bat_per_s"], 1),
        "agreement": round(agree_n / total, 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "checks_speedup": round(by["checks"]["speedup"], 2),
        "n": n,
        "threads": torch.get_num_threads(),
        "load_average": round(load, 2),
    }
    if par is not None:
        result.update({"processes": par["processes"],
                       "lrp_cls_processes_per_s": round(par["parallel_per_s"], 1),
                       "lrp_cls_processes_ratio": round(par["ratio"], 2),
                       "lrp_cls_processes_same": par["same"],
                       "lrp_seg_processes_per_s": round(par_seg["parallel_per_s"], 1),
                       "lrp_seg_processes_ratio": round(par_seg["ratio"], 2),
                       "lrp_seg_processes_same": par_seg["same"]})
    print(f"\nagreement (GEC fingerprints, LRP decisions): {agree_n}/{total}; "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
