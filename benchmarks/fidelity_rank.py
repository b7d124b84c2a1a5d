"""Benchmark: do short proxy trainings rank losses as long ones do? (choosing multi-fidelity rungs)

For each task, a pool of losses — the zoo's formulas for the task's kind plus candidates of a
random search that passed screening (checks, GEC, LRP) — is trained with seed 0 through a ladder
of rungs ``max_steps · η^-k`` (one continued training: rung results equal straight runs), and at
``max_steps`` with ``--seeds`` fresh seeds (1, 2, …). Printed per rung: the Spearman rank
correlation of the rung's fitness with the fresh-seed full-length mean, and the chance that each
of the final top 3 (by that mean) survives successive halving (the best 1/η of each rung, on the
seed-0 results) to the top rung. A diverged loss counts as the worst fitness.

    python benchmarks/fidelity_rank.py                  # digits and shapes-seg, ~40 losses each
    python benchmarks/fidelity_rank.py --quick          # tiny (test suite)

The defaults of :class:`~lossforge.evaluation.rungs.FidelityConfig` come from this table (its
docstring states the rule: a rung may cut where ρ ≥ 0.5 and the final top 3 survive with chance
≥ 2/3; the shortest such rung is max/9 on ``digits`` and max/3 on ``shapes-seg``, hence
``min_steps = max/9`` with a second bracket from max/3).

The last line printed is one JSON object: ``{task: {"rungs": [...], "spearman": [...],
"top3_survival": [...], "losses": n}}``.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from lossforge import tasks
from lossforge.evaluation import rung_check
from lossforge.evaluation.funnel import Funnel, FunnelConfig
from lossforge.evaluation.rung_check import spearman
from lossforge.training import OK, train


def loss_pool(task, n_zoo: int, n_searched: int, seed: int = 0) -> list[str]:
    """Up to ``n_zoo`` zoo formulas for the task's kind and ``n_searched`` random candidates that
    pass the funnel's screening stages (:func:`lossforge.evaluation.rung_check.loss_pool`)."""
    stages = None
    if n_searched > 0:
        funnel = Funnel(task, task.default_metric, FunnelConfig())
        funnel.calibrate()
        stages = [stage for stage in funnel.stages if stage is not funnel.proxy]
    return rung_check.loss_pool(task, n_zoo, n_searched, seed, stages)


def rung_fitness(task, loss: str, ladder: list[int], metric: str) -> list[float]:
    """Seed-0 fitness at each rung (one continued training; ``-inf`` once diverged)."""
    sign = task.metric(metric).sign
    out, state = [], None
    for steps in ladder:
        if state is None and out:
            out.append(-math.inf)
            continue
        r = train(task, loss, steps=steps, seed=0, splits=("val",), state=state, keep_state=True)
        state = r.state if r.status == OK else None
        out.append(sign * r.val[metric] if r.status == OK else -math.inf)
    return out


def full_mean(task, loss: str, steps: int, seeds: int, metric: str) -> float:
    sign = task.metric(metric).sign
    vals = []
    for s in range(1, seeds + 1):
        r = train(task, loss, steps=steps, seed=s, splits=("val",))
        vals.append(sign * r.val[metric] if r.status == OK else -math.inf)
    return float(np.mean(vals)) if all(math.isfinite(v) for v in vals) else -math.inf


def top3_survival(fit: np.ndarray, final: np.ndarray, start: int, eta: int) -> float:
    """Successive halving from rung ``start`` on the seed-0 fitnesses ``fit`` (losses × rungs):
    the share of the final top 3 (by ``final``) that reach the last rung."""
    alive = np.arange(len(fit))
    for k in range(start, fit.shape[1] - 1):
        keep = max(1, len(alive) // eta)
        alive = alive[np.argsort(-fit[alive, k], kind="stable")[:keep]]
    best = np.argsort(-final, kind="stable")[:3]
    return float(np.isin(best, alive).mean())


def measure(task_name: str, n_zoo: int, n_searched: int, seeds: int, eta: int, levels: int,
            max_steps: int | None) -> dict:
    task = tasks.get(task_name)
    metric = task.default_metric
    top = max_steps or task.proxy.steps
    ladder = [max(1, round(top / eta ** k)) for k in range(levels - 1, -1, -1)]
    t0 = time.perf_counter()
    pool = loss_pool(task, n_zoo, n_searched)
    fit = np.array([rung_fitness(task, f, ladder, metric) for f in pool])
    final = np.array([full_mean(task, f, top, seeds, metric) for f in pool])
    rho = [spearman(fit[:, k], final) for k in range(len(ladder))]
    surv = [top3_survival(fit, final, k, eta) for k in range(len(ladder))]
    return {"rungs": ladder, "spearman": rho, "top3_survival": surv, "losses": len(pool),
            "seconds": time.perf_counter() - t0, "metric": metric}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (test suite)")
    ap.add_argument("--tasks", nargs="+", default=["digits", "shapes-seg"])
    ap.add_argument("--zoo", type=int, default=None, help="zoo losses (default 16; quick 3)")
    ap.add_argument("--searched", type=int, default=None, help="screened candidates (default 24; quick 2)")
    ap.add_argument("--seeds", type=int, default=None, help="fresh seeds at full length (3; quick 1)")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--levels", type=int, default=4, help="rungs in the ladder (max·η^-k)")
    ap.add_argument("--max-steps", type=int, default=None, help="full length (default: the task's)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    q = a.quick
    n_zoo = a.zoo if a.zoo is not None else (3 if q else 16)
    n_searched = a.searched if a.searched is not None else (2 if q else 24)
    seeds = a.seeds or (1 if q else 3)
    max_steps = a.max_steps or (18 if q else None)
    tasks_ = ["digits"] if q and a.tasks == ["digits", "shapes-seg"] else a.tasks
    levels = 3 if q else a.levels
    out = {}
    for name in tasks_:
        r = out[name] = measure(name, n_zoo, n_searched, seeds, a.eta, levels, max_steps)
        print(f"\n{name}: {r['losses']} losses, metric {r['metric']}, eta {a.eta}, "
              f"{seeds} fresh seeds at {r['rungs'][-1]} steps ({r['seconds']:.0f} s)")
        print(f"{'rung steps':>10} {'spearman':>9} {'top-3 survive (from here)':>26}")
        for steps, rho, s in zip(r["rungs"], r["spearman"], r["top3_survival"]):
            print(f"{steps:>10} {rho:>9.3f} {s:>26.2f}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
