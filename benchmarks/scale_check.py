"""Benchmark: which scale-sanity threshold separates the losses that collapse under SGD from good ones.

Gathers losses — the trained candidates of search studies (``--study PATH``, repeatable; without
one, two small ``digits`` searches, autoloss-zero and GLO, are run into a temporary folder), every
classification loss of the zoo, and the four losses of issue 18's table — and for each

* reads the scale sanity of :mod:`lossforge.evaluation.scale` on the funnel's checks probe
  (``digits``, 8 samples, seed 1234, standard-normal logits): the gradient ratio to CE and the
  eps-dominance (value change when the protection eps goes 1e-6 -> 1e-4);
* trains it on ``digits`` with the task's Adam and with SGD (lr 0.05, momentum 0.9), ``--steps``
  steps, seed 0, and scores validation accuracy.

A loss is *good* when both trainings reach CE's accuracy minus ``--margin``, *collapsing* when Adam
does and SGD does not, *bad* when Adam does not (such a loss fails the search anyway). For each
threshold on either reading (and the default :class:`~lossforge.evaluation.scale.ScaleLimits`) the table counts the collapsing losses
caught and the good losses lost.

    python benchmarks/scale_check.py                      # searches + 300-step trainings (~15 min)
    python benchmarks/scale_check.py --study a.db --study b.db
    python benchmarks/scale_check.py --quick              # tiny: a few losses, 20 steps

The last line printed is one JSON object with the counts.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from lossforge import zoo
from lossforge.evaluation.checks import ChecksConfig
from lossforge.evaluation.probes import task_probe
from lossforge.evaluation.scale import ScaleLimits, measure_scale, reference_grad_norm
from lossforge.expr import parse
from lossforge.tasks import get as get_task
from lossforge.training import train

#: The losses of issue 18's table (CE, the quickstart's best, a hall-of-fame regular, a long search's best).
ISSUE18 = ["-sum_c(y * log(p))", "square(slog(tanh(y * p)))", "square(inv(p * y))",
           "square(inv(mean_c(y * p)) * mean_c(sum_c(square(square(p)))))"]
SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}
GRAD_THRESHOLDS = (10.0, 30.0, 100.0, 300.0, 1000.0)
SHIFT_THRESHOLDS = (0.01, 0.03, 0.1, 0.3, 1.0)


def run_searches(folder: Path, quick: bool) -> list[Path]:
    """Two small digits searches (autoloss-zero with the full funnel, GLO without the LRP)."""
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.study import LossSearch

    cfg = FunnelConfig()
    alz = replace(cfg, proxy=replace(cfg.proxy, steps=10 if quick else 60))
    glo = replace(alz, use_lrp=False)
    budget = 20 if quick else 400
    LossSearch(task="digits", storage=folder / "alz.db", budget=budget, seed=3, funnel=alz,
               strategy_options={"population_size": 20 if quick else 40,
                                 "batch_size": 20 if quick else 40}).run().close()
    LossSearch(task="digits", storage=folder / "glo.db", budget=12 if quick else 60, seed=2,
               strategy="glo", funnel=glo,
               strategy_options={"population_size": 6 if quick else 12, "gp_generations": 2,
                                 "cma_generations": 2}).run().close()
    return [folder / "alz.db", folder / "glo.db"]


def gather(studies: list[Path], limit: int | None) -> list[tuple[str, str]]:
    """(source, formula) of every loss to measure, without repeats (first source wins)."""
    from lossforge.study import load_study

    out: dict[str, str] = {f: "issue18" for f in ISSUE18}
    for e in (zoo.get(n) for n in zoo.names()):
        if e.kind == "classification" and e.formula:
            out.setdefault(str(parse(e.formula)), f"zoo:{e.name}")
    for path in studies:
        study = load_study(path, readonly=True)
        rows = sorted(study.trained(), key=lambda r: -r.fitness)[:limit]
        for r in rows:
            out.setdefault(r.formula, f"search:{Path(path).stem}")
        study.close()
    return [(src, f) for f, src in out.items()]


def accuracy(formula: str, steps: int, **opt) -> float:
    """Validation accuracy on digits after ``steps`` steps (0 when training went non-finite)."""
    r = train("digits", formula, steps=steps, seed=0, splits=("val",), **opt)
    acc = r.val.get("accuracy") if r.status == "ok" else None
    return float(acc) if acc is not None and math.isfinite(acc) else 0.0


def measure_all(losses: list[tuple[str, str]], steps: int) -> list[dict]:
    """One row per loss: source, formula, readings, Adam and SGD accuracy."""
    cfg = ChecksConfig()
    probe = task_probe(get_task("digits"), 8, cfg.seed)
    pred = probe.random_pred(torch.Generator().manual_seed(cfg.seed))
    ref = reference_grad_norm(probe, pred)
    rows = []
    for src, formula in losses:
        reading = measure_scale(parse(formula), probe, pred, reference_norm=ref)
        row = {"source": src, "formula": formula, **reading.to_dict(),
               "adam": accuracy(formula, steps), "sgd": accuracy(formula, steps, **SGD)}
        rows.append(row)
        print(f"{row['grad_ratio']:9.3g} {row['value_shift']:9.3g} {row['adam']:.3f} "
              f"{row['sgd']:.3f}  {src:22s} {formula}", flush=True)
    return rows


def classify(rows: list[dict], margin: float) -> None:
    """Add ``label``: good / collapsing / bad, relative to CE's accuracies (``margin`` below)."""
    ce = next(r for r in rows if r["formula"] == ISSUE18[0])
    for r in rows:
        adam_ok = r["adam"] >= ce["adam"] - margin
        sgd_ok = r["sgd"] >= ce["sgd"] - margin
        r["label"] = "bad" if not adam_ok else ("good" if sgd_ok else "collapsing")


def flagged(row: dict, grad: float, shift: float) -> bool:
    """The rule of :func:`lossforge.evaluation.scale.scale_reason` on a stored row."""
    r = row["grad_ratio"]
    return not (1.0 / grad <= r <= grad) or not row["value_shift"] <= shift


def sweep(rows: list[dict]) -> list[dict]:
    """Counts per threshold: collapsing caught, good lost, bad caught."""
    out = []
    cases = [("grad_ratio", g, math.inf) for g in GRAD_THRESHOLDS]
    cases += [("value_shift", math.inf, s) for s in SHIFT_THRESHOLDS]
    d = ScaleLimits()
    cases.append(("default limits", d.max_grad_ratio,
                  math.inf if d.max_value_shift is None else d.max_value_shift))
    for name, g, s in cases:
        hit = {lab: sum(flagged(r, g, s) for r in rows if r["label"] == lab)
               for lab in ("collapsing", "good", "bad")}
        out.append({"reading": name, "grad": None if g == math.inf else g,
                    "shift": None if s == math.inf else s, **hit})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", action="append", type=Path, default=[],
                    help="a study file whose trained candidates to include (repeatable)")
    ap.add_argument("--top", type=int, default=None, help="at most this many per study, best first")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--margin", type=float, default=0.05,
                    help="accuracy below CE's (same optimizer) still counted as training well")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        studies = args.study or run_searches(Path(tmp), args.quick)
        losses = gather(studies, 3 if args.quick else args.top)
    if args.quick:
        losses = losses[:6] + [x for x in losses if x[0].startswith("search")][:2]
    steps = 20 if args.quick else args.steps
    rows = measure_all(losses, steps)
    classify(rows, args.margin)
    counts = {lab: sum(r["label"] == lab for r in rows) for lab in ("good", "collapsing", "bad")}
    print(f"\n{len(rows)} losses: {counts}; {steps} steps, margin {args.margin}")
    table = sweep(rows)
    print(f"{'reading':16s} {'grad':>7s} {'shift':>6s} {'collapsing':>10s} {'good lost':>9s} "
          f"{'bad':>4s}")
    for t in table:
        print(f"{t['reading']:16s} {t['grad'] or '-':>7} {t['shift'] or '-':>6} "
              f"{t['collapsing']:4d}/{counts['collapsing']:<5d} {t['good']:4d}/{counts['good']:<4d} "
              f"{t['bad']:4d}")
    default = ScaleLimits()
    for r in rows:
        if r["label"] == "collapsing" or flagged(r, default.max_grad_ratio, math.inf):
            print(f"  {r['label']:10s} ratio {r['grad_ratio']:.3g} shift {r['value_shift']:.3g} "
                  f"adam {r['adam']:.3f} sgd {r['sgd']:.3f}  {r['formula']}")
    print(json.dumps({"losses": len(rows), "steps": steps, "counts": counts, "sweep": table,
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
