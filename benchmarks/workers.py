"""Speed-up of a proxy-bound search on 2 local worker processes over 1.

The same search (``digits``, AutoLoss-Zero, LRP off so that nearly every candidate is trained,
seed fixed) runs with ``--workers 1`` and ``--workers 2`` (and in-process for reference). Worker
processes are started and warmed up (torch imported, task data loaded) before the clock starts,
so the times compare the search itself. The runs must produce the same study (order of rows
aside). Prints a table and, as the last line, a JSON object with ``speedup_2_workers`` (search
wall time with 1 worker / with 2).

On Linux the table also shows the CPU seconds this process and its workers used during the search,
and ``cores``: CPU seconds / wall seconds. With 2 workers on an otherwise idle 2-core machine it
approaches 2 and so does the speed-up; when other programs load the machine, ``cores`` shows how
much of it the search actually got (the load average at the start of each run is shown too).

    python benchmarks/workers.py [--budget 48] [--generation 24] [--proxy-steps 100] [--repeats 2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from lossforge import tasks
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.proxy import safe_proxy_job
from lossforge.execution import make_executor
from lossforge.study import LossSearch


def warm_up(executor, task, workers: int) -> None:
    """Start every worker and load the task's data in it (short trainings, in parallel)."""
    futures = [executor.submit(safe_proxy_job, (task, "-sum_c(y * log(p))", task.default_metric, 2, i,
                                           "cpu")) for i in range(2 * workers)]
    for f in futures:
        f.result()


def _descendants(pid: int) -> set[int]:
    found = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            found |= {child} | _descendants(child)
    return found


def cpu_seconds() -> float | None:
    """User + system CPU seconds of this process and all its descendants alive now (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    for pid in {os.getpid()} | _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if pid == os.getpid():
                return None
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def run(label: str, workers: int | None, args, funnel: FunnelConfig, workdir: Path):
    task = tasks.get(args.task)
    task.data()
    executor = make_executor(workers=workers)
    if workers:
        warm_up(executor, task, workers)
    path = workdir / f"{label}-{time.monotonic_ns()}.db"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        cpu0, start = cpu_seconds(), time.perf_counter()
        study = LossSearch(task=task, storage=path, budget=args.budget, seed=args.seed,
                           funnel=funnel, strategy_options={"batch_size": args.generation},
                           executor=executor).run()
        wall, cpu1 = time.perf_counter() - start, cpu_seconds()
    finally:
        executor.shutdown()
    stats = study.stats
    key = sorted((r.generation, r.position, r.formula, r.status, r.fitness) for r in study.candidates)
    study.close()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {"label": label, "wall": wall, "proxy": stats["proxy"]["seconds"],
            "trained": stats["proxy"]["out"], "key": key, "cpu": cpu, "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits")
    ap.add_argument("--budget", type=int, default=48)
    ap.add_argument("--generation", type=int, default=24, help="candidates per generation")
    ap.add_argument("--proxy-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="budget 16, 60 proxy steps")
    ap.add_argument("--no-serial", action="store_true", help="skip the in-process reference run")
    args = ap.parse_args()
    if args.quick:
        args.budget, args.generation, args.proxy_steps = 16, 16, 60
    torch.set_num_threads(1)  # the in-process reference: one thread, like each worker
    funnel = replace(FunnelConfig(), use_lrp=False)
    funnel = replace(funnel, proxy=replace(funnel.proxy, steps=args.proxy_steps))
    plan = ([] if args.no_serial else [("in-process", None)]) + [("1 worker", 1), ("2 workers", 2)]
    results: dict[str, list[dict]] = {label: [] for label, _ in plan}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternate, so that machine noise hits all alike
            for label, workers in plan:
                results[label].append(run(label, workers, args, funnel, Path(tmp)))
    keys = {label: rs[0]["key"] for label, rs in results.items()}
    same = all(k == keys["1 worker"] for k in keys.values())
    best = {label: min(rs, key=lambda r: r["wall"]) for label, rs in results.items()}
    one = best["1 worker"]["wall"]
    print(f"{args.task}: budget {args.budget}, {args.proxy_steps} proxy steps, LRP off, "
          f"{os.cpu_count()} CPUs, best of {args.repeats}")
    print(f"{'executor':<12} {'search s':>9} {'proxy s':>8} {'trained':>8} {'speed-up':>9} "
          f"{'CPU s':>7} {'cores':>6} {'load':>5}")
    for label, r in best.items():
        cpu = "—" if r["cpu"] is None else f"{r['cpu']:.1f}"
        cores = "—" if r["cpu"] is None else f"{r['cpu'] / r['wall']:.2f}"
        print(f"{label:<12} {r['wall']:>9.2f} {r['proxy']:>8.2f} {r['trained']:>8} "
              f"{one / r['wall']:>8.2f}x {cpu:>7} {cores:>6} {r['load']:>5.1f}")
    print(f"same study contents: {same}")
    speedup = one / best["2 workers"]["wall"]
    print(json.dumps({"speedup_2_workers": round(speedup, 3), "task": args.task,
                      "budget": args.budget, "proxy_steps": args.proxy_steps,
                      "seconds_1_worker": round(one, 3),
                      "seconds_2_workers": round(best["2 workers"]["wall"], 3),
                      "same_results": same, "cpus": os.cpu_count(),
                      "cores_used_2_workers": None if best["2 workers"]["cpu"] is None else
                      round(best["2 workers"]["cpu"] / best["2 workers"]["wall"], 2),
                      "load_average": round(best["2 workers"]["load"], 2)}))


if __name__ == "__main__":
    main()
