"""Benchmark: AutoLoss-Zero's search-efficiency ablation — losses explored per unit of compute.

The paper (FIELD.md) reports naive evolution 1×; + LRP ~700×; + GEC ~1000×; + stop for invalid
loss values ~5000×. This measures the same cumulative ablation on our implementation, side by side
in one process, on one seeded stream of random expressions of the ``autoloss-zero`` space (what
the ``autoloss-zero`` strategy draws while it initialises its population):

``naive``         every candidate proxy-trained for the full ``steps``; no screening at all.
``lrp``           + checks and the Loss-Rejection Protocol (per-candidate reference path); neither
                  the LRP nor the proxy stops at an invalid (non-finite) loss value.
``gec``           + the Gradient-Equivalence Check (hits cost only their fingerprint).
``invalid_stop``  + early stop at the first invalid value, in the LRP and in proxy training.
``batched``       + population-vectorised screening (``evaluation.batched``).
``batched_proxy`` + batched proxy training (``evaluation.proxy_batched``), when available.

How it is measured. Seconds per explored candidate, per configuration; speed-up = naive s/candidate
÷ the configuration's s/candidate. ``naive`` proxy-trains a small sample (``--naive-n``) of the
stream; every other configuration runs the funnel (``lossforge.evaluation.funnel.Funnel``) on the
same first ``-n`` candidates, so their decisions can be compared (``agree`` column). Not stopping
at an invalid value is charged, not run: the library's training always stops there, so a candidate
whose training stopped early is charged a full-length training — the median time of the sample's
trainings that did run every step (``naive``, and the proxy stage of ``lrp`` and ``gec``). The LRP
without early stop is run for real (every step, decision at the end). The LRP is calibrated once
(``Funnel.calibrate``: hand-made losses must pass) and every configuration uses the calibrated
settings; calibration, probe and data set-up are one-off costs, reported but not charged. Each
configuration's sample is run in two halves, in the order naive..batched_proxy then back, so that
a change of machine load affects every configuration alike.

    python benchmarks/search_efficiency.py            # full run (~5-10 minutes)
    python benchmarks/search_efficiency.py --quick    # a smaller run (under a minute)

The last line printed is one JSON object: ``{"speedup": {config: x}, "s_per_candidate": ...}``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
import warnings

import numpy as np
import torch

from lossforge import tasks
from lossforge.evaluation.candidate import GEC_HIT, INVALID, REJECTED_CHECKS, REJECTED_LRP
from lossforge.evaluation.funnel import Funnel, FunnelConfig
from lossforge.evaluation.lrp import LossRejection, LRPConfig, metric_value
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.expr import spaces, variation
from lossforge.expr.export import loss_value
from lossforge.training import OK, train

CONFIGS = ["naive", "lrp", "gec", "invalid_stop", "batched", "batched_proxy"]
REQUIRED = ["naive", "lrp", "gec", "invalid_stop", "batched"]


def stream(n: int, seed: int):
    """The first ``n`` candidates of the seeded stream (random ``autoloss-zero`` expressions)."""
    space = spaces.get("autoloss-zero", variables=["p", "y"])
    rng = np.random.default_rng(seed)
    return [variation.random_expr(space, rng) for _ in range(n)]


class NoStopLRP(LossRejection):
    """The LRP without its early stop: every candidate runs all ``steps`` (a non-finite value is
    remembered and rejects the candidate at the end). Same decisions as :class:`LossRejection`,
    at the cost of not stopping. Mirrors ``lrp.lrp_score`` step for step."""

    def score(self, expr):
        cfg = self.config
        x = self.init.clone().requires_grad_(True)
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD([x], lr=cfg.lr, momentum=cfg.momentum)
        else:
            opt = torch.optim.Adam([x], lr=cfg.lr)
        finite = True
        for _ in range(cfg.steps):
            env, mask = self.probe.variables(x)
            value = loss_value(expr, env, mask)
            finite = bool(torch.isfinite(value)) and finite
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
        if not finite or not torch.isfinite(x).all():
            return None
        return self.metric.sign * (metric_value(self.metric, self.probe, x)
                                   - metric_value(self.metric, self.probe, self.init))


def _proxy_config(steps: int, batch: int | None) -> ProxyStageConfig:
    if batch is not None and "batch" in {f.name for f in dataclasses.fields(ProxyStageConfig)}:
        return ProxyStageConfig(steps=steps, batch=batch)
    return ProxyStageConfig(steps=steps)


def _has_batched_proxy() -> bool:
    try:
        import lossforge.evaluation.proxy_batched  # noqa: F401
    except ImportError:
        return False
    return "batch" in {f.name for f in dataclasses.fields(ProxyStageConfig)}


class Naive:
    """Full proxy training of every candidate; invalid ones are charged a full-length training."""

    def __init__(self, task, metric, steps):
        self.task, self.metric, self.steps = task, metric, steps
        self.runs = []   # (seconds, completed every step, the training loop's own seconds)

    def run(self, exprs) -> float:
        t0 = time.perf_counter()
        for e in exprs:
            t = time.perf_counter()
            loop = None
            try:
                r = train(self.task, e, steps=self.steps, splits=("val",))
                full, loop = r.status == OK and r.steps_done == self.steps, r.wall_time
            except (RuntimeError, ValueError, FloatingPointError):
                full = False
            self.runs.append((time.perf_counter() - t, full, loop))
        return time.perf_counter() - t0


class Configured:
    """One funnel configuration, run on parts of the stream (its GEC memory carries over)."""

    def __init__(self, name, task, metric, cfg: FunnelConfig, no_stop: bool):
        self.name, self.no_stop = name, no_stop
        self.funnel = Funnel(task, metric, cfg)
        if no_stop:
            f = self.funnel
            f.lrp = NoStopLRP(f.lrp.probe, f.lrp.metric, cfg.lrp)
        self.cands = []
        self.seconds = 0.0

    def run(self, exprs) -> float:
        if self.funnel.config.batched:
            from lossforge.evaluation import batched

            batched.clear_cache()   # no compiled templates from another configuration
        t = time.perf_counter()
        self.cands += self.funnel.run(list(exprs))
        dt = time.perf_counter() - t
        self.seconds += dt
        return dt

    def surcharge(self, full_train_s: float) -> float:
        """Without the early stop, an invalid training would have run every step."""
        if not self.no_stop:
            return 0.0
        return sum(max(0.0, full_train_s - c.seconds.get("proxy", 0.0))
                   for c in self.cands if c.status == INVALID)


def invalid_by_stage(cands) -> list[int]:
    """Candidates with a non-finite loss value, found by [checks, LRP, proxy training]."""
    return [sum(c.status == REJECTED_CHECKS and c.reason.startswith("non-finite") for c in cands),
            sum(c.status == REJECTED_LRP and c.lrp_score is None for c in cands),
            sum(c.status == INVALID for c in cands)]


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

    exprs = stream(max(n, n_naive), args.seed)
    t = time.perf_counter()
    task.data()
    base = FunnelConfig(lrp=LRPConfig(steps=lrp_steps), proxy=_proxy_config(steps, 1),
                        batched=False)
    calib = Funnel(task, metric, base)
    calib.calibrate()
    lrp_cfg = calib.lrp.config
    setup_s = time.perf_counter() - t
    print(f"set-up (data, probes, LRP calibration; not charged): {setup_s:.1f}s; calibrated LRP "
          f"lr {lrp_cfg.lr:g}, threshold {lrp_cfg.threshold:.3f}", flush=True)

    def cfg(**kw):
        proxy = _proxy_config(steps, kw.pop("batch", 1))
        return dataclasses.replace(base, lrp=lrp_cfg, proxy=proxy, **kw)

    runners = {"naive": Naive(task, metric, steps),
               "lrp": Configured("lrp", task, metric, cfg(use_gec=False), no_stop=True),
               "gec": Configured("gec", task, metric, cfg(), no_stop=True),
               "invalid_stop": Configured("invalid_stop", task, metric, cfg(), no_stop=False),
               "batched": Configured("batched", task, metric, cfg(batched=True), no_stop=False)}
    if _has_batched_proxy():
        runners["batched_proxy"] = Configured("batched_proxy", task, metric,
                                              cfg(batched=True, batch=16), no_stop=False)
    samples = {name: exprs[:n_naive] if name == "naive" else exprs[:n] for name in runners}
    wall = dict.fromkeys(runners, 0.0)
    order = list(runners)
    for part, names in ((0, order), (1, order[::-1])):
        for name in names:
            s = samples[name]
            half = s[:len(s) // 2] if part == 0 else s[len(s) // 2:]
            wall[name] += runners[name].run(half)
        print(f"  half {part + 1}/2 done", flush=True)

    naive = runners["naive"]
    full = [(s, loop) for s, ok, loop in naive.runs if ok]
    if not full:   # no sampled candidate trained every step: time a hand-made loss
        t = time.perf_counter()
        r = train(task, "-sum_c(y * log(p))", steps=steps, splits=("val",))
        full = [(time.perf_counter() - t, r.wall_time)]
    full_s = statistics.median(s for s, _ in full)
    loop_s = statistics.median(loop for _, loop in full)   # the training loop alone
    rows = {}
    naive_charged = sum(s if ok else full_s for s, ok, _ in naive.runs)
    rows["naive"] = {"n": len(naive.runs), "wall_s": wall["naive"], "charged_s": naive_charged,
                     "trained": len(naive.runs), "fit": len(full), "gec_hits": 0,
                     "invalid": [0, 0, len(naive.runs) - len(full)], "agree": None}
    ref = runners["invalid_stop"].cands
    for name, r in runners.items():
        if name == "naive":
            continue
        # a candidate's proxy ``seconds`` are its training loop's own: compare like with like
        extra = r.surcharge(loop_s)
        st = r.funnel.stats()
        same = [a.status == b.status for a, b in zip(r.cands, ref)
                if name != "lrp" or b.status != GEC_HIT]
        rows[name] = {"n": len(r.cands), "wall_s": wall[name], "charged_s": wall[name] + extra,
                      "trained": st["proxy"]["n_in"], "fit": st["proxy"]["n_out"],
                      "gec_hits": sum(c.status == GEC_HIT for c in r.cands),
                      "invalid": invalid_by_stage(r.cands),
                      "agree": f"{sum(same)}/{len(same)}",
                      "stages_s": {k: round(v["seconds"], 2) for k, v in st.items()}}
    base_rate = rows["naive"]["charged_s"] / rows["naive"]["n"]
    for row in rows.values():
        row["s_per_cand"] = row["charged_s"] / row["n"]
        row["speedup"] = base_rate / row["s_per_cand"]
        # the speed-up's limit when a proxy training costs far more than screening a candidate
        row["bound"] = row["n"] / row["trained"] if row["trained"] else None

    print()
    print(f"{'config':14} {'cands':>5} {'wall s':>8} {'charged s':>10} {'s/cand':>8} "
          f"{'speed-up':>9} {'trained':>8} {'fit':>4} {'invalid':>7} {'GEC hits':>8} "
          f"{'agree':>7} {'bound':>7}")
    for name, r in rows.items():
        print(f"{name:14} {r['n']:5d} {r['wall_s']:8.1f} {r['charged_s']:10.1f} "
              f"{r['s_per_cand']:8.3f} {r['speedup']:8.1f}x {r['trained']:8d} {r['fit']:4d} "
              f"{'/'.join(map(str, r['invalid'])):>7} {r['gec_hits']:8d} {r['agree'] or '-':>7} "
              f"{'-' if r['bound'] is None else format(r['bound'], '6.1f') + 'x':>7}")
    print(f"\ntrained: candidates that reached proxy training; fit: those that trained every step; "
          f"invalid: candidates with a non-finite loss value, found by checks/LRP/proxy (the "
          f"funnel's checks, always on, catch most with one evaluation: the early stop acts on the "
          f"rest); bound: candidates / trained, the speed-up's limit when a proxy "
          f"training costs far more than screening (AutoLoss-Zero's segmentation proxies; here "
          f"one training is {full_s:.1f}s). agree: same final status as invalid_stop on the same candidates (lrp: GEC hits of "
          f"invalid_stop left out). Charged = wall + a full-length training ({full_s:.2f}s, median "
          f"of the naive sample's complete trainings) for every training that stopped at an invalid "
          f"value in naive, and the difference to a complete training loop ({loop_s:.2f}s) for "
          f"each in the proxy stage of lrp and gec. Per-stage seconds:")
    for name, r in rows.items():
        if "stages_s" in r:
            print(f"  {name:14} {r['stages_s']}")
    result = {
        "speedup": {k: round(r["speedup"], 2) for k, r in rows.items()},
        "s_per_candidate": {k: round(r["s_per_cand"], 4) for k, r in rows.items()},
        "candidates": {k: r["n"] for k, r in rows.items()},
        "trained": {k: r["trained"] for k, r in rows.items()},
        "invalid": {k: r["invalid"] for k, r in rows.items()},
        "gec_hits": {k: r["gec_hits"] for k, r in rows.items()},
        "bound": {k: None if r["bound"] is None else round(r["bound"], 2) for k, r in rows.items()},
        "task": task.name, "metric": metric, "proxy_steps": steps, "lrp_steps": lrp_steps,
        "full_training_s": round(full_s, 3), "setup_s": round(setup_s, 1), "seed": args.seed,
        "threads": torch.get_num_threads(), "load_average": round(load, 2),
        "paper": {"naive": 1, "lrp": 700, "gec": 1000, "invalid_stop": 5000},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
