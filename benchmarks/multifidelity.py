"""Benchmark: AutoLoss-Zero search with and without multi-fidelity proxy training (ASHA rungs),
paired over search seeds at an equal CPU-time budget.

For each task and search seed, the searches run one after the other in this process with the
same seed and the same CPU-time budget (``--seconds`` of ``time.process_time``; one torch thread,
so a busy machine slows a search down but does not change what it is charged): ``none`` (every
screened candidate trained for ``max_steps``, today's single-length proxy) and ``asha`` (rungs
``min_steps · η^k`` up to ``max_steps``; ``FidelityConfig``'s defaults unless ``--min-steps`` /
``--brackets`` are given). A search stops at its budget (the candidate in flight finishes).
One-time costs of the process (imports, building the task's data) are paid before any clock
starts; each search's own start-up (LRP calibration, the baseline) is charged to it.

Printed per search: candidates evaluated (trained to the top rung, or pruned at a lower one, or
stopped as invalid/failed in proxy training) per CPU-hour, the same per CPU-hour of the proxy
stage alone (what rungs act on; screening — checks, GEC, LRP — costs the same per candidate in
both arms; stage seconds are wall-clock), the screening share of the search's stage time, the proxy steps spent, how many
candidates stopped at each rung, and the best loss (the study's ``best``: steps first with
rungs) retrained on ``--retrain-seeds`` fresh seeds for ``max_steps`` on the test split. Then per
task: the throughput ratios asha / none (mean per-CPU-hour of each arm; and the median of the
paired per-seed ratios), the paired differences of the retrained metric (asha − none), how many
seeds asha is ahead on, and the Wilcoxon signed-rank p-value.

    python benchmarks/multifidelity.py                   # digits and shapes-seg, 5 seeds, 60 CPU-s
    python benchmarks/multifidelity.py --quick           # tiny (test suite)
    python benchmarks/multifidelity.py --min-steps auto  # the ladder measured per search

With ``--min-steps auto`` each asha search first runs its rung check (the zoo's losses trained
once through the rungs, :mod:`lossforge.evaluation.rung_check`), charged to its CPU budget; the
ratio is also printed without it (``throughput_ratio_after_check``: a check reused across the
searches on one task).

The last line is one JSON object: ``{task: {"none": [...], "asha": [...], "throughput_ratio",
"proxy_throughput_ratio", "paired_ratio_median", "median_diff", "ahead", "wilcoxon_p",
"ladder", ...}}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lossforge import tasks
from lossforge.evaluation.fidelity import rung_summary
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.rungs import FidelityConfig
from lossforge.study import LossSearch, load_study
from lossforge.training import OK, train

SCREENING = ("checks", "gec", "lrp")


class _Budget(Exception):
    """The search used its time budget."""


def one_search(task: str, seed: int, seconds: float, fidelity: FidelityConfig | None,
               max_steps: int, folder: Path, generation: int,
               lrp_steps: int | None = None, population: int | None = None,
               lrp_width: int | None = None) -> dict:
    """One autoloss-zero search of ``generation`` candidates per generation (population
    ``population``, default 4 generations; the worst removed) until ``seconds`` of CPU time; its
    throughput, stage split, proxy steps and best formula. ``lrp_steps``: a shorter LRP with the
    same summed step (lr · 500 / steps; calibrated as usual); ``lrp_width``: a narrower dense
    screening probe (``LRPConfig.spatial_size``)."""
    cfg = FunnelConfig()
    cfg = replace(cfg, proxy=replace(cfg.proxy, steps=max_steps))
    if lrp_steps is not None:
        cfg = replace(cfg, lrp=cfg.lrp.with_steps(lrp_steps))
    if lrp_width is not None:
        cfg = replace(cfg, lrp=replace(cfg.lrp, spatial_size=lrp_width))
    start = time.process_time()

    def stop(_event):
        if time.process_time() - start > seconds:
            raise _Budget

    path = folder / f"{task}-{seed}-{'asha' if fidelity else 'none'}.db"
    search = LossSearch(task=task, storage=path, budget=100_000, seed=seed, funnel=cfg,
                        fidelity=fidelity, progress=stop,
                        strategy_options={"population_size": population or 4 * generation,
                                          "batch_size": generation, "remove": "worst"})
    try:
        search.run()
    except _Budget:
        pass
    used = time.process_time() - start
    study = load_study(path)
    stage_s = {k: float(v.get("seconds", 0.0)) for k, v in study.stats.items()}
    stopped: dict = {}
    if fidelity:
        rs = rung_summary(study.store.rung_rows())
        evaluated, steps, stopped = rs["candidates"], rs["steps_spent"], rs["stopped_at"]
    else:
        evaluated = study.stats["proxy"]["in"]  # trained, or stopped invalid/failed: like asha's
        steps = len(study.trained()) * max_steps  # a diverged training stops early: not counted
        stopped = {max_steps: evaluated}
    best = study.best
    check = study.store.meta("rung_check")  # min_steps="auto": measured at the search's start
    study.close()
    check_s = float(check["seconds"]) if check else 0.0
    proxy_s = stage_s.get("proxy", 0.0)
    screen_s = sum(stage_s.get(k, 0.0) for k in SCREENING)
    return {"seed": seed, "cpu_s": used, "evaluated": evaluated,
            "per_cpu_hour": evaluated / used * 3600,
            "check_s": check_s, "chosen": check["chosen"] if check else None,
            "per_cpu_hour_after_check": evaluated / max(used - check_s, 1e-9) * 3600,
            "per_proxy_hour": evaluated / max(proxy_s, 1e-9) * 3600,
            "proxy_s": proxy_s, "screening_s": screen_s,
            "screening_share": screen_s / max(proxy_s + screen_s, 1e-9),
            "proxy_steps": steps, "stopped_at": stopped,
            "best": best.formula if best else None}


def retrain(task_name: str, formula: str | None, steps: int, seeds: list[int]) -> float:
    """Mean test metric (times its direction) over ``seeds``; a diverged run counts 0."""
    if formula is None:
        return float("nan")
    task = tasks.get(task_name)
    m = task.metric(task.default_metric)
    vals = []
    for s in seeds:
        r = train(task, formula, steps=steps, seed=s, splits=("test",))
        vals.append(m.sign * r.test[task.default_metric] if r.status == OK else 0.0)
    return float(np.mean(vals))


def warm_up(task_name: str) -> None:
    """Pay the process's one-time costs (imports, the task's data, first kernels) before any
    search's clock starts, so that the first arm is not charged for them."""
    task = tasks.get(task_name)
    task.data()
    train(task, task.baseline, steps=2, seed=0, splits=("val",))


def compare(rows: dict[str, list[dict]]) -> dict:
    """Throughput ratios and the paired test of the retrained metric, asha against none."""
    from scipy import stats

    none, asha = rows["none"], rows["asha"]
    diffs = [b["retrained"] - a["retrained"] for a, b in zip(none, asha)]
    finite = [d for d in diffs if d == d]
    p = (float(stats.wilcoxon(finite).pvalue) if len(finite) >= 2 and any(finite)
         else float("nan"))
    mean = lambda rs, k: statistics.mean(r[k] for r in rs)  # noqa: E731
    return {"throughput_ratio": mean(asha, "per_cpu_hour") / max(1e-9, mean(none, "per_cpu_hour")),
            "proxy_throughput_ratio": (mean(asha, "per_proxy_hour")
                                       / max(1e-9, mean(none, "per_proxy_hour"))),
            "throughput_ratio_after_check": (mean(asha, "per_cpu_hour_after_check")
                                             / max(1e-9, mean(none, "per_cpu_hour"))),
            "paired_ratio_median": statistics.median(
                b["per_cpu_hour"] / max(1e-9, a["per_cpu_hour"]) for a, b in zip(none, asha)),
            "steps_per_candidate": {k: mean(rs, "proxy_steps") / max(1e-9, mean(rs, "evaluated"))
                                    for k, rs in rows.items()},
            "diffs": diffs,
            "median_diff": statistics.median(finite) if finite else float("nan"),
            "ahead": sum(d > 0 for d in finite), "behind": sum(d < 0 for d in finite),
            "wilcoxon_p": p}


def print_task(name: str, out: dict, n_seeds: int, seconds: float) -> None:
    print(f"\n{name}: {n_seeds} paired seeds, {seconds:g} CPU s per search, rungs "
          f"{out['ladder']} (eta {out['eta']}), max {out['max_steps']} steps, LRP "
          f"{out['lrp_steps']} steps (probe width {out['lrp_width']}), population {out['population']}")
    print(f"{'seed':>4} {'arm':>4} {'evaluated':>9} {'/CPU-h':>7} {'/proxy-h':>8} {'screen':>6} "
          f"{'steps':>6} {'retrained':>9}  stopped at (steps: n)  best")
    for kind in ("none", "asha"):
        for r in out[kind]:
            stops = " ".join(f"{k}:{v}" for k, v in r["stopped_at"].items())
            print(f"{r['seed']:>4} {kind:>4} {r['evaluated']:>9} {r['per_cpu_hour']:>7.0f} "
                  f"{r['per_proxy_hour']:>8.0f} {r['screening_share']:>6.0%} "
                  f"{r['proxy_steps']:>6} {r['retrained']:>9.4f}  {stops:<22} {r['best']}")
    spc = out["steps_per_candidate"]
    print(f"throughput asha/none: {out['throughput_ratio']:.2f}x per CPU-hour (median of paired "
          f"ratios {out['paired_ratio_median']:.2f}x), {out['proxy_throughput_ratio']:.2f}x per "
          f"proxy-stage hour; proxy steps per candidate {spc['none']:.0f} -> {spc['asha']:.0f}")
    if any(r["check_s"] for r in out["asha"]):
        print(f"rung check (min_steps=auto, charged to each asha search): chose "
              f"{[r['chosen'] for r in out['asha']]}, {statistics.mean(r['check_s'] for r in out['asha']):.1f} s "
              f"per search; without it (a check reused across searches on the task): "
              f"{out['throughput_ratio_after_check']:.2f}x per CPU-hour")
    print(f"retrained (test, {out['retrain_seeds']} fresh seeds) asha - none: "
          f"{' '.join(f'{d:+.4f}' for d in out['diffs'])}; median {out['median_diff']:+.4f}, "
          f"asha ahead on {out['ahead']}, behind on {out['behind']} of {len(out['diffs'])}, "
          f"Wilcoxon p = {out['wilcoxon_p']:.3g}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", nargs="+", default=["digits", "shapes-seg"])
    ap.add_argument("--seeds", type=int, default=None, help="paired search seeds (5; quick 2)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=None,
                    help="CPU seconds per search (60; quick 6)")
    ap.add_argument("--min-steps", default=None,
                    help="steps, or 'auto' (a rung check per asha search, charged to it); "
                         "default: FidelityConfig's")
    ap.add_argument("--max-steps", type=int, default=None, help="default: the task's proxy steps")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--brackets", type=int, default=None, help="default: FidelityConfig's")
    ap.add_argument("--generation", type=int, default=10, help="candidates per generation")
    ap.add_argument("--lrp-width", type=int, default=None,
                    help="both arms: dense screening probes at most this wide (default 32)")
    ap.add_argument("--population", type=int, default=None,
                    help="evolution's population (default 4 generations): a search fills it with "
                         "random candidates before it evolves")
    ap.add_argument("--retrain-seeds", type=int, default=None, help="fresh seeds (3; quick 1)")
    ap.add_argument("--lrp-steps", type=int, default=None,
                    help="both arms: an LRP of this many steps at lr x 500/steps (default: 500)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    q = a.quick
    n_seeds = a.seeds or (2 if q else 5)
    seconds = a.seconds or (6.0 if q else 60.0)
    names = ["digits"] if q and a.tasks == ["digits", "shapes-seg"] else a.tasks
    out = {}
    for name in names:
        warm_up(name)
        top = a.max_steps or (27 if q else tasks.get(name).proxy.steps)
        low = a.min_steps if a.min_steps in (None, "auto") else int(a.min_steps)
        fid = FidelityConfig("asha", min_steps=low, max_steps=top, eta=a.eta,
                             **({} if a.brackets is None else {"brackets": a.brackets}))
        fresh = [1000 + i for i in range(a.retrain_seeds or (1 if q else 3))]
        rows: dict[str, list[dict]] = {"none": [], "asha": []}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(a.first_seed, a.first_seed + n_seeds):
                for kind, f in (("none", None), ("asha", fid)):
                    r = one_search(name, seed, seconds, f, top, Path(tmp), a.generation,
                                   a.lrp_steps, a.population, a.lrp_width)
                    r["retrained"] = retrain(name, r["best"], top, fresh)
                    rows[kind].append(r)
                    print(f"  {name} seed {seed} {kind}: {r['evaluated']} evaluated in "
                          f"{r['cpu_s']:.0f} CPU s, retrained {r['retrained']:.4f}", flush=True)
        out[name] = {**rows, **compare(rows), "max_steps": top, "eta": a.eta,
                     "ladder": "auto" if fid.auto else fid.ladder(top),
                     "cpu_s_per_search": seconds,
                     "retrain_seeds": len(fresh), "generation": a.generation,
                     "population": a.population or 4 * a.generation,
                     "lrp_steps": a.lrp_steps or FunnelConfig().lrp.steps,
                     "lrp_width": a.lrp_width or FunnelConfig().lrp.spatial_size}
        print_task(name, out[name], n_seeds, seconds)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
