"""Benchmark: AutoLoss-Zero search with and without multi-fidelity proxy training (ASHA rungs),
paired over search seeds at an equal CPU-time budget.

For each task and search seed, two searches run one after the other in this process with the
same seed and the same wall-clock budget (``--seconds``; one thread, so CPU time ≈ wall time):
``none`` (every screened candidate trained for ``max_steps``) and ``asha`` (rungs
``min_steps · η^k`` up to ``max_steps``). A search stops at its budget (the candidate in flight
finishes). Printed per search: candidates trained (to the top rung) or pruned per CPU-hour, proxy
steps spent, and the best loss (the study's ``best``: steps first with rungs) retrained on
``--retrain-seeds`` fresh seeds for ``max_steps`` on the test split; then the paired differences
(asha − none) and the Wilcoxon signed-rank p-value.

    python benchmarks/multifidelity.py                   # digits and shapes-seg, 5 seeds
    python benchmarks/multifidelity.py --quick           # tiny (test suite)

The last line is one JSON object: ``{task: {"none": [...], "asha": [...], "throughput_ratio",
"median_diff", "wilcoxon_p"}}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lossforge import tasks
from lossforge.evaluation.fidelity import rung_summary
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.rungs import FidelityConfig
from lossforge.study import LossSearch
from lossforge.training import OK, train


class _Budget(Exception):
    """The search used its time budget."""


def one_search(task: str, seed: int, seconds: float, fidelity: FidelityConfig | None,
               max_steps: int, folder: Path, generation: int) -> dict:
    """One search until ``seconds``; its throughput, proxy steps and best formula."""
    from dataclasses import replace

    cfg = FunnelConfig()
    cfg = replace(cfg, proxy=replace(cfg.proxy, steps=max_steps))
    start = time.process_time()

    def stop(_event):
        if time.process_time() - start > seconds:
            raise _Budget

    path = folder / f"{task}-{seed}-{'asha' if fidelity else 'none'}.db"
    search = LossSearch(task=task, storage=path, budget=100_000, seed=seed, funnel=cfg,
                        fidelity=fidelity, progress=stop,
                        strategy_options={"population_size": 4 * generation,
                                          "batch_size": generation, "remove": "worst"})
    try:
        search.run()
    except _Budget:
        pass
    used = time.process_time() - start
    from lossforge.study import load_study

    study = load_study(path)
    trained = study.trained()
    if fidelity:
        rs = rung_summary(study.store.rung_rows())
        evaluated, steps = rs["candidates"], rs["steps_spent"]
    else:
        evaluated = study.stats["proxy"]["in"]  # trained, or stopped invalid/failed: like asha's
        steps = len(trained) * max_steps  # a diverged training stops early: not counted
    best = study.best
    study.close()
    return {"seed": seed, "cpu_s": used, "evaluated": evaluated,
            "per_cpu_hour": evaluated / used * 3600, "proxy_steps": steps,
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", nargs="+", default=["shapes-seg", "digits"])
    ap.add_argument("--seeds", type=int, default=None, help="paired search seeds (5; quick 2)")
    ap.add_argument("--seconds", type=float, default=None, help="CPU seconds per search (120; quick 6)")
    ap.add_argument("--min-steps", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None, help="default: the task's proxy steps")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--generation", type=int, default=10)
    ap.add_argument("--retrain-seeds", type=int, default=None, help="fresh seeds (3; quick 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from scipy import stats

    q = a.quick
    n_seeds = a.seeds or (2 if q else 5)
    seconds = a.seconds or (6.0 if q else 120.0)
    names = ["digits"] if q and a.tasks == ["shapes-seg", "digits"] else a.tasks
    out = {}
    for name in names:
        top = a.max_steps or (27 if q else tasks.get(name).proxy.steps)
        fid = FidelityConfig("asha", min_steps=a.min_steps, max_steps=top, eta=a.eta)
        fresh = [1000 + i for i in range(a.retrain_seeds or (1 if q else 3))]
        rows = {"none": [], "asha": []}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(n_seeds):
                for kind, f in (("none", None), ("asha", fid)):
                    r = one_search(name, seed, seconds, f, top, Path(tmp), a.generation)
                    r["retrained"] = retrain(name, r["best"], top, fresh)
                    rows[kind].append(r)
        diffs = [b["retrained"] - a_["retrained"] for a_, b in zip(rows["none"], rows["asha"])]
        finite = [d for d in diffs if d == d]
        p = (float(stats.wilcoxon(finite).pvalue) if len(finite) >= 2 and any(finite)
             else float("nan"))
        ratio = (statistics.mean(r["per_cpu_hour"] for r in rows["asha"])
                 / max(1e-9, statistics.mean(r["per_cpu_hour"] for r in rows["none"])))
        out[name] = {**rows, "throughput_ratio": ratio,
                     "median_diff": statistics.median(finite) if finite else float("nan"),
                     "ahead": sum(d > 0 for d in finite), "wilcoxon_p": p,
                     "max_steps": top, "ladder": fid.ladder(top)[0], "cpu_s_per_search": seconds}
        print(f"\n{name}: {n_seeds} paired seeds, {seconds:g} CPU s per search, rungs "
              f"{fid.ladder(top)[0]}")
        print(f"{'seed':>4} {'kind':>5} {'evaluated/CPU-h':>16} {'proxy steps':>12} "
              f"{'retrained':>10}  best")
        for kind in ("none", "asha"):
            for r in rows[kind]:
                print(f"{r['seed']:>4} {kind:>5} {r['per_cpu_hour']:>16.0f} {r['proxy_steps']:>12} "
                      f"{r['retrained']:>10.4f}  {r['best']}")
        print(f"throughput asha/none {ratio:.2f}x; retrained asha - none: median "
              f"{out[name]['median_diff']:+.4f}, ahead on {out[name]['ahead']}/{len(finite)}, "
              f"Wilcoxon p = {p:.3g}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
