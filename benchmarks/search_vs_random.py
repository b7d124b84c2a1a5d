"""AutoLoss-Zero evolution vs random search at equal budget, over paired search seeds.

The paper (FIELD.md): random search 2.2 mIoU vs 80.7 for AutoLoss-Zero. Here both strategies go
through the *same* funnel (checks → GEC → LRP → proxy) with the same number of explored
candidates, so the comparison isolates what evolution adds over sampling. For each search seed
both strategies run with that seed: evolution's random initial population is then the same
stream of graphs random search starts with (a paired design: what differs is what evolution
does once initialised).

Printed: one row per (strategy, seed) — best proxy fitness, candidates trained (and how many
beat the ``--reference`` loss's proxy fitness), minutes spent in the funnel's stages (from the
study file, so resumed runs count in full) — the best-so-far curve at a few fractions of the
budget, the paired differences, and with ``--retrain N`` each search's best loss retrained with N fresh seeds (validation split, the
proxy's steps): the best of many proxy fitnesses is optimistically biased (each loss is scored
with one training seed), the retrained mean is not. Last line: one JSON object
(``autoloss_zero_best`` and ``random_best``: means over the seeds; per-seed lists; ``trained``).

Study files go to ``--out``; running again with the same ``--out`` and settings resumes them.

    python benchmarks/search_vs_random.py --quick
    python benchmarks/search_vs_random.py --task shapes-seg --metric miou --budget 2000 \\
        --seeds 0,1,2 --population 10 --generation 25 --proxy-steps 120 --jobs 2 --retrain 3 --out out/vs
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.search.strategy import parse_options
from lossforge.study import LossSearch, load_study
from lossforge.tasks import get as get_task
from lossforge.training import OK, train

STRATEGIES = ("autoloss-zero", "random")
#: Fractions of the budget at which the best-so-far fitness is printed.
CURVE_AT = (0.25, 0.5, 0.75, 1.0)


def strategy_options(strategy: str, args) -> dict:
    options = {"batch_size": args.generation}
    if strategy == "autoloss-zero":
        options["population_size"] = args.population
        if args.tournament is not None:
            options["tournament_size"] = args.tournament
        if args.remove is not None:
            options["remove"] = args.remove
        options.update(parse_options(args.option or []))
    return options


def study_path(args, strategy: str, seed: int) -> Path:
    """``OUT/<strategy>[-<remove>][-<tag>]_s<seed>.db`` (random search's files serve every
    variant of evolution)."""
    tag = ""
    if strategy != "random":
        tag = "".join(f"-{t}" for t in (args.remove, args.tag) if t)
    return Path(args.out) / f"{strategy}{tag}_s{seed}.db"


def run_search(job: tuple[str, int, dict]) -> dict:
    """One search (in a worker process); returns its summary and best-so-far curve."""
    strategy, seed, a = job
    torch.set_num_threads(1)
    args = argparse.Namespace(**a)
    lrp = LRPConfig() if args.lrp_steps is None else LRPConfig(steps=args.lrp_steps)
    funnel = FunnelConfig(lrp=lrp, proxy=ProxyStageConfig(steps=args.proxy_steps))
    path = study_path(args, strategy, seed)
    LossSearch(task=args.task, metric=args.metric, strategy=strategy, budget=args.budget,
               seed=seed, storage=path, funnel=funnel,
               strategy_options=strategy_options(strategy, args)).run().close()
    return summarise(path, strategy, seed)


def reference_fitness(a: dict) -> float | None:
    """The proxy fitness of the reference loss (``--reference``), trained as the funnel trains a
    candidate (proxy steps, seed 0, validation split)."""
    args = argparse.Namespace(**a)
    if not args.reference:
        return None
    torch.set_num_threads(1)
    task = get_task(args.task)
    r = train(task, args.reference, steps=args.proxy_steps or task.proxy.steps, seed=0,
              splits=("val",))
    return r.val[args.metric] if r.status == OK else None


def summarise(path: Path, strategy: str, seed: int) -> dict:
    study = load_study(path)
    try:
        rows = sorted(study.candidates, key=lambda r: r.id)
        best_so_far, best = [], None
        for r in rows:
            if r.status == "trained" and r.fitness is not None:
                best = r.fitness if best is None else max(best, r.fitness)
            best_so_far.append(best)
        top = study.best
        stage_seconds = sum(st["seconds"] for st in study.stats.values())
        return {"strategy": strategy, "seed": seed, "explored": len(rows),
                "trained": len(study.trained()),
                "stage_seconds": stage_seconds,
                "fitnesses": [r.fitness for r in rows if r.status == "trained"
                              and r.fitness is not None],
                "best": None if top is None else top.fitness,
                "formula": None if top is None else top.formula,
                "curve": [best_so_far[max(0, int(round(f * len(rows))) - 1)] if rows else None
                          for f in CURVE_AT]}
    finally:
        study.close()


def retrain(job: tuple[str, dict]) -> list[float]:
    """Validation metric of ``formula`` trained with fresh seeds 1..N (invalid runs: nan)."""
    formula, a = job
    if formula is None:
        return []
    torch.set_num_threads(1)
    args = argparse.Namespace(**a)
    task = get_task(args.task)
    out = []
    for s in range(1, args.retrain + 1):
        r = train(task, formula, steps=args.proxy_steps or task.proxy.steps, seed=s, splits=("val",))
        out.append(r.val[args.metric] if r.status == OK else float("nan"))
    return out


def fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def paired(a: list[float], b: list[float]) -> str:
    """Mean and median paired difference, wins, the paired t-test's p and the Wilcoxon
    signed-rank test's p (two-sided, exact for few seeds; it does not assume normal differences:
    one very large win inflates the t-test's variance) — both need ≥ 2 seeds."""
    d = np.asarray(a, float) - np.asarray(b, float)
    wins = int((d > 0).sum())
    text = (f"mean difference {d.mean():+.4f} (median {np.median(d):+.4f}), autoloss-zero ahead "
            f"on {wins} of {len(d)} seeds")
    if len(d) >= 2 and np.std(d) > 0:
        text += f", paired t-test p = {stats.ttest_rel(a, b).pvalue:.3f}"
    if len(d) >= 2 and np.any(d != 0):
        text += f", Wilcoxon signed-rank p = {stats.wilcoxon(a, b).pvalue:.3f}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="shapes-seg")
    ap.add_argument("--metric", default="miou")
    ap.add_argument("--budget", type=int, default=2000, help="explored candidates per search")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated search seeds")
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--tournament", type=int, default=None, help="default: the strategy's (5)")
    ap.add_argument("--remove", choices=["oldest", "worst"], default=None,
                    help="which member evolution removes (default: the strategy's, oldest)")
    ap.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="another autoloss-zero option (repeatable), e.g. unique=false")
    ap.add_argument("--tag", default=None,
                    help="names this evolution variant: its study files and RESULTS.md section")
    ap.add_argument("--generation", type=int, default=25, help="candidates per generation")
    ap.add_argument("--proxy-steps", type=int, default=None, help="default: the task's")
    ap.add_argument("--lrp-steps", type=int, default=None, help="default: FIELD.md's 500")
    ap.add_argument("--retrain", type=int, default=0, help="fresh seeds per search's best loss")
    ap.add_argument("--reference", default="ce",
                    help="hand-made loss whose proxy fitness is the bar (count of trained "
                         "candidates above it); '' for none")
    ap.add_argument("--jobs", type=int, default=1, help="searches run in parallel processes")
    ap.add_argument("--out", default=None, help="study files (default: a new temporary folder)")
    ap.add_argument("--results", default=None,
                    help="write the autoloss-zero-vs-random section of this RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="digits, tiny budgets (< 1 minute)")
    args = ap.parse_args()
    if args.quick:
        args.task, args.metric, args.budget, args.generation, args.seeds = \
            "digits", "accuracy", 60, 20, "0"
        args.population, args.proxy_steps, args.lrp_steps = 4, 30, 60
    parse_options(args.option or [], "--option")   # a bad KEY=VALUE fails here, not in a worker
    args.out = args.out or tempfile.mkdtemp(prefix="lossforge-vs-random-")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    a = vars(args)
    jobs = [(s, seed, a) for seed in seeds for s in STRATEGIES]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        ref = pool.submit(reference_fitness, a)
        rows = list(pool.map(run_search, jobs))
        ref = ref.result()
        retrained = list(pool.map(retrain, [(r["formula"], a) for r in rows])) \
            if args.retrain else [[] for _ in rows]

    print(f"{args.task} / {args.metric}: {args.budget} explored candidates per search, "
          f"same funnel, search seeds {seeds}")
    curve_head = "".join(f"{f'@{int(f * 100)}%':>8}" for f in CURVE_AT)
    if ref is not None:
        print(f"reference {args.reference}: proxy fitness {ref:.4f} (column '>ref': trained "
              "candidates above it)")
    print(f"{'strategy':<15}{'seed':>5}{'best':>8}{'retrain':>9}{'trained':>8}{'>ref':>6}{'min':>6}"
          f"{curve_head}  best formula")
    for r, rt in zip(rows, retrained):
        r["retrained"] = float(np.nanmean(rt)) if rt and not np.isnan(rt).all() else None
        r["above_reference"] = None if ref is None else sum(f > ref for f in r["fitnesses"])
        curve = "".join(f"{fmt(v):>8}" for v in r["curve"])
        above = "—" if ref is None else str(r["above_reference"])
        print(f"{r['strategy']:<15}{r['seed']:>5}{fmt(r['best']):>8}{fmt(r['retrained']):>9}"
              f"{r['trained']:>8}{above:>6}{r['stage_seconds'] / 60:>6.1f}{curve}  {r['formula']}")

    def per(strategy: str, key: str) -> list:
        return [r[key] for r in rows if r["strategy"] == strategy]

    best = {s: [np.nan if v is None else v for v in per(s, "best")] for s in STRATEGIES}
    print("best proxy fitness: " + paired(best["autoloss-zero"], best["random"]))
    summary = {"task": args.task, "metric": args.metric, "budget": args.budget, "seeds": seeds,
               "autoloss_zero_best": float(np.mean(best["autoloss-zero"])),
               "random_best": float(np.mean(best["random"])),
               "autoloss_zero_best_per_seed": best["autoloss-zero"],
               "random_best_per_seed": best["random"],
               "autoloss_zero_trained": per("autoloss-zero", "trained"),
               "random_trained": per("random", "trained"), "reference": args.reference,
               "reference_fitness": ref,
               "autoloss_zero_above_reference": per("autoloss-zero", "above_reference"),
               "random_above_reference": per("random", "above_reference"), "studies": args.out}
    if args.retrain:
        rt = {s: [np.nan if v is None else v for v in per(s, "retrained")] for s in STRATEGIES}
        print(f"best loss retrained ({args.retrain} fresh seeds, validation): "
              + paired(rt["autoloss-zero"], rt["random"]))
        summary.update(autoloss_zero_retrained=rt["autoloss-zero"], random_retrained=rt["random"])
    if args.results:
        write_results(Path(args.results), args, rows, summary)
    print(json.dumps(summary))


def write_results(path: Path, args, rows: list[dict], summary: dict) -> None:
    """The ``autoloss-zero-vs-random`` section of RESULTS.md (experiments/results.py plumbing)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import results as R

    head = ["strategy", "seed", "best proxy", "best retrained", "trained", "> ref",
            "stage min"] + [f"best @{int(f * 100)}%" for f in CURVE_AT] + ["best loss"]
    body = [[r["strategy"], r["seed"], fmt(r["best"]), fmt(r.get("retrained")), r["trained"],
             "—" if r.get("above_reference") is None else r["above_reference"],
             f"{r['stage_seconds'] / 60:.1f}", *[fmt(v) for v in r["curve"]],
             f"`{r['formula']}`"] for r in rows]
    minutes = {s: sum(r["stage_seconds"] for r in rows if r["strategy"] == s) / 60
               for s in STRATEGIES}
    best = {s: [r["best"] for r in rows if r["strategy"] == s] for s in STRATEGIES}
    variant = f", variant `{args.tag}`" if args.tag else ""
    md = [f"## AutoLoss-Zero vs random search, paired seeds (`{args.task}`, {args.metric}"
          f"{variant})\n",
          R.provenance(summary["seeds"], "benchmark"),
          f"Each search explores {args.budget} candidates through the same funnel (checks, GEC, "
          f"LRP, proxy of {args.proxy_steps or 'the task default'} steps); for each seed both "
          "strategies share the initial random stream (evolution's initial population is random "
          f"search's first draws). Evolution: population {args.population}, generations of "
          f"{args.generation}, removal {args.remove or 'oldest'}"
          + "".join(f", {o}" for o in args.option or []) + ". 'best retrained': the search's "
          f"best loss trained with {args.retrain} fresh seeds (validation split, proxy steps) — "
          "the best of many single-seed proxy fitnesses is optimistically biased. '> ref': "
          f"trained candidates whose proxy fitness beats {args.reference or 'no reference'} "
          f"({fmt(summary.get('reference_fitness'))}). 'stage min': minutes in the funnel's "
          "stages, from the study file.\n",
          R.table(head, body),
          *(["Note: with removal 'oldest' and generations at least as large as the population, "
             "each generation's children replace the whole population (the strategy warns); a "
             "population several times the generation size is the intended setting.\n"]
            if (args.remove or "oldest") == "oldest" and args.generation >= args.population
            else []),
          f"- Best proxy fitness: autoloss-zero {R.mean_std(best['autoloss-zero'])}, random "
          f"{R.mean_std(best['random'])}; "
          + paired(best["autoloss-zero"], best["random"]) + ".",
          ]
    if args.retrain:
        md.append("- Best loss retrained: autoloss-zero "
                  f"{R.mean_std(summary['autoloss_zero_retrained'])}, random "
                  f"{R.mean_std(summary['random_retrained'])}; "
                  + paired(summary["autoloss_zero_retrained"], summary["random_retrained"]) + ".")
    if summary.get("reference_fitness") is not None:
        md.append(f"- Trained candidates above {args.reference}: autoloss-zero "
                  f"{summary['autoloss_zero_above_reference']}, random "
                  f"{summary['random_above_reference']}.")
    trained = {s: sum(r["trained"] for r in rows if r["strategy"] == s) for s in STRATEGIES}
    md.append(f"- Compute: the budget counts explored candidates (the paper's unit), not time. "
              f"Over all seeds autoloss-zero trained {trained['autoloss-zero']} candidates in "
              f"{minutes['autoloss-zero']:.0f} stage-minutes, random search {trained['random']} in "
              f"{minutes['random']:.0f}.")
    section = "autoloss-zero-vs-random" + (f"-{args.tag}" if args.tag else "")
    R.write_section(section, "\n".join(md) + "\n", path)


if __name__ == "__main__":
    main()
