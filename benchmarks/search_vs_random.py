"""AutoLoss-Zero evolution vs random search at equal budget (the paper: mIoU 80.7 vs 2.2).

Runs both strategies on the same task, metric, funnel and number of explored candidates, then
prints the best validation fitness of each, and as the last line a JSON object with
``autoloss_zero_best``, ``random_best`` and ``trained`` counts.

    python benchmarks/search_vs_random.py [--task shapes-seg] [--metric miou] [--budget 600] [--quick]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.study import LossSearch


def run(strategy: str, args, out: Path) -> dict:
    funnel = FunnelConfig(lrp=LRPConfig(steps=args.lrp_steps), proxy=ProxyStageConfig(steps=args.proxy_steps))
    start = time.perf_counter()
    study = LossSearch(task=args.task, metric=args.metric, strategy=strategy, budget=args.budget,
                       seed=args.seed, storage=out / f"{strategy}.db", funnel=funnel,
                       strategy_options={"batch_size": args.generation}).run()
    best = study.best
    return {"best": None if best is None else best.fitness,
            "formula": None if best is None else best.formula,
            "trained": study.stats["proxy"]["out"], "explored": study.explored,
            "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="shapes-seg")
    ap.add_argument("--metric", default="miou")
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--generation", type=int, default=50)
    ap.add_argument("--proxy-steps", type=int, default=None)
    ap.add_argument("--lrp-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the study files here")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.task, args.metric, args.budget, args.generation = "digits", "accuracy", 120, 40
        args.proxy_steps, args.lrp_steps = 40, 100
    out = Path(args.out or tempfile.mkdtemp(prefix="lossforge-vs-random-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = {s: run(s, args, out) for s in ("autoloss-zero", "random")}
    print(f"{args.task} / {args.metric}: budget {args.budget} explored candidates each, seed {args.seed}")
    print(f"{'strategy':<15}{'best':>9}{'trained':>9}{'seconds':>9}  best formula")
    for name, r in rows.items():
        best = "—" if r["best"] is None else f"{r['best']:.4f}"
        print(f"{name:<15}{best:>9}{r['trained']:>9}{r['seconds']:>9.0f}  {r['formula']}")
    print(json.dumps({"task": args.task, "metric": args.metric, "budget": args.budget,
                      "autoloss_zero_best": rows["autoloss-zero"]["best"],
                      "random_best": rows["random"]["best"],
                      "autoloss_zero_trained": rows["autoloss-zero"]["trained"],
                      "random_trained": rows["random"]["trained"], "studies": str(out)}))


if __name__ == "__main__":
    main()
