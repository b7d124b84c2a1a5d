"""Does a strategy improve on its first generation? Best fitness of generation 0 vs the whole run.

    python benchmarks/strategy_progress.py --strategy taylor --task digits --budget 48 --proxy-steps 60

Prints the best fitness per generation and, as the last line, a JSON object with
``first_generation_best``, ``final_best`` and ``improved``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.search.strategy import parse_options
from lossforge.study import LossSearch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="taylor")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--metric", default=None)
    ap.add_argument("--budget", type=int, default=48)
    ap.add_argument("--proxy-steps", type=int, default=60)
    ap.add_argument("--lrp-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--option", action="append", default=[], help="strategy option KEY=VALUE")
    args = ap.parse_args()
    options = parse_options(args.option, "--option")
    path = Path(tempfile.mkdtemp(prefix="lossforge-progress-")) / "study.db"
    funnel = FunnelConfig(lrp=LRPConfig(steps=args.lrp_steps), proxy=ProxyStageConfig(steps=args.proxy_steps))
    study = LossSearch(task=args.task, metric=args.metric, strategy=args.strategy, budget=args.budget,
                       seed=args.seed, storage=path, funnel=funnel, strategy_options=options).run()
    per_gen: dict[int, float] = {}
    for r in study.trained():
        per_gen[r.generation] = max(per_gen.get(r.generation, float("-inf")), r.fitness)
    print(f"{args.strategy} on {args.task}: budget {args.budget}, proxy {args.proxy_steps} steps")
    running = float("-inf")
    for g in sorted(per_gen):
        running = max(running, per_gen[g])
        print(f"generation {g:>3}: best {per_gen[g]:.4f}   best so far {running:.4f}")
    first = per_gen.get(min(per_gen)) if per_gen else None
    final = study.best.fitness if study.best else None
    print(json.dumps({"strategy": args.strategy, "task": args.task, "first_generation_best": first,
                      "final_best": final, "improved": bool(first is not None and final > first),
                      "best_formula": study.best.formula if study.best else None}))


if __name__ == "__main__":
    main()
