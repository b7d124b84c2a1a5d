"""AutoLoss-Zero's search-efficiency ablation: losses explored per unit of compute.

The paper (FIELD.md) reports naive evolution 1×; + LRP ~700×; + GEC ~1000×; + stop for invalid
loss values ~5000×. :func:`measure` runs the same cumulative ablation on this implementation, side
by side in one process, on one seeded stream of random expressions of the ``autoloss-zero`` space
(what the ``autoloss-zero`` strategy draws while it initialises its population):

``naive``         every candidate proxy-trained for the full ``steps``; no screening at all.
``lrp``           + checks and the Loss-Rejection Protocol (per-candidate reference path); neither
                  the LRP nor the proxy stops at an invalid (non-finite) loss value.
``gec``           + the Gradient-Equivalence Check (hits cost only their fingerprint).
``invalid_stop``  + early stop at the first invalid value, in the LRP and in proxy training.
``batched``       + population-vectorised screening (``evaluation.batched``).
``batched_proxy`` + batched proxy training (``training.stacked``), when available.
``multi_fidelity`` ``batched`` + multi-fidelity proxy training (ASHA rungs,
                  :mod:`~lossforge.evaluation.fidelity`; default rungs ``steps/9``,
                  ``steps/3``, ``steps`` and a bracket from ``steps/3``, η = 3): a candidate counts as evaluated when it reached the top rung
                  or was pruned below it. Built on ``batched_proxy``: the rungs waiting at one
                  moment train together (``fidelity.rung_batch``). Each half of the sample is its own race (no
                  promotion history carries from the first half to the second, as it would
                  across a study's generations), and ``proxy_steps`` counts the steps it trained.

How it is measured. Seconds per explored candidate, per configuration; speed-up = naive s/candidate
÷ the configuration's s/candidate. ``naive`` proxy-trains a small sample (``n_naive``) of the
stream; every other configuration runs the funnel (:class:`~lossforge.evaluation.funnel.Funnel`)
on the same first ``n`` candidates, so their decisions can be compared (``agree``). Not stopping at
an invalid value is charged, not run: the library's training always stops there, so a candidate
whose training stopped early is charged a full-length training — the median time of the sample's
trainings that did run every step. The LRP without early stop is run for real (every step,
decision at the end). The LRP is calibrated once (``Funnel.calibrate``: hand-made losses must
pass) and every configuration uses the calibrated settings; calibration, probe and data set-up are
one-off costs, reported but not charged. Each configuration's sample is run in two halves, in the
order naive..batched_proxy then back, so that a change of machine load affects every configuration
alike. Used by ``benchmarks/search_efficiency.py`` and ``experiments/autoloss_zero.py``.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np
import torch

from lossforge.evaluation.candidate import GEC_HIT, INVALID, REJECTED_CHECKS, REJECTED_LRP
from lossforge.evaluation.funnel import Funnel, FunnelConfig
from lossforge.evaluation.lrp import LossRejection, LRPConfig, improvement, metric_value
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.evaluation.rungs import FidelityConfig
from lossforge.expr import spaces, variation
from lossforge.tasks.spec import load_task
from lossforge.training import OK, train

CONFIGS = ["naive", "lrp", "gec", "invalid_stop", "batched", "batched_proxy", "multi_fidelity"]
REQUIRED = ["naive", "lrp", "gec", "invalid_stop", "batched"]
#: The paper's speed-ups (FIELD.md), cumulative.
PAPER = {"naive": 1, "lrp": 700, "gec": 1000, "invalid_stop": 5000}


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
            value = self.probe.loss(expr, x)
            finite = bool(torch.isfinite(value)) and finite
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
        if not finite or not torch.isfinite(x).all():
            return None
        start = metric_value(self.metric, self.probe, self.init)
        return improvement(self.metric, self.probe, start, metric_value(self.metric, self.probe, x))


def _proxy_config(steps: int, batch: int | None,
                  fidelity: FidelityConfig | None = None) -> ProxyStageConfig:
    if batch is not None and "batch" in {f.name for f in dataclasses.fields(ProxyStageConfig)}:
        return ProxyStageConfig(steps=steps, batch=batch, fidelity=fidelity)
    return ProxyStageConfig(steps=steps, fidelity=fidelity)


def proxy_steps_spent(runner: "Configured") -> int:
    """The proxy-training steps a configuration trained: the sum over its rungs of the steps each
    rung trained (a continued rung from where it started) with multi-fidelity, else ``steps`` per
    candidate that reached proxy training (an invalid one counts in full, as it is charged)."""
    log = getattr(runner.funnel.proxy, "rung_log", None)
    if log is not None:
        return sum(r.steps - r.started_at for r in log)
    steps = runner.funnel.proxy.config.steps
    return steps * runner.funnel.stats()["proxy"]["n_in"]


def has_batched_proxy() -> bool:
    try:
        import lossforge.training.stacked  # noqa: F401
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
        self.funnel = f = Funnel(task, metric, cfg)
        # ``cfg.lrp`` is already calibrated (the dense-task step scaling included): use it as is,
        # as a resumed study does, instead of letting the funnel scale the step a second time
        f.lrp.config = cfg.lrp
        if no_stop:
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


def measure(task="digits", metric: str | None = None, n: int = 100, n_naive: int = 10,
            steps: int | None = None, lrp_steps: int | None = None, seed: int = 0,
            log=print, fidelity: FidelityConfig | None = None,
            lrp_width: int | None = None) -> dict:
    """Run the ablation; ``log(line)`` reports progress. ``fidelity``: the rungs of
    ``multi_fidelity`` (default ``FidelityConfig("asha")``: its default rungs and brackets; its
    ``max_steps`` is always ``steps``); ``lrp_width``: the dense probes' width
    (``LRPConfig.spatial_size``; default 32). Returns ``{"rows": {config: {...}},
    "summary": {...}}``: per configuration ``n, wall_s, charged_s, s_per_cand, speedup, trained,
    fit, invalid, gec_hits, agree, bound, proxy_steps`` (and ``stages_s``); the summary is the
    benchmark's JSON."""
    task = load_task(task)
    metric = metric or task.default_metric
    steps = steps or task.proxy.steps
    lrp_steps = lrp_steps or LRPConfig().steps
    exprs = stream(max(n, n_naive), seed)
    t = time.perf_counter()
    task.data()
    lrp = LRPConfig(steps=lrp_steps)
    if lrp_width is not None:
        lrp = dataclasses.replace(lrp, spatial_size=lrp_width)
    base = FunnelConfig(lrp=lrp, proxy=_proxy_config(steps, 1),
                        batched=False)
    calib = Funnel(task, metric, base)
    calib.calibrate()
    lrp_cfg = calib.lrp.config
    setup_s = time.perf_counter() - t
    log(f"set-up (data, probes, LRP calibration; not charged): {setup_s:.1f}s; calibrated LRP "
        f"lr {lrp_cfg.lr:g}, threshold {lrp_cfg.threshold:.3f}")

    fidelity = dataclasses.replace(fidelity or FidelityConfig("asha"), max_steps=steps)

    def cfg(**kw):
        proxy = _proxy_config(steps, kw.pop("batch", 1), kw.pop("fidelity", None))
        return dataclasses.replace(base, lrp=lrp_cfg, proxy=proxy, **kw)

    runners = {"naive": Naive(task, metric, steps),
               "lrp": Configured("lrp", task, metric, cfg(use_gec=False), no_stop=True),
               "gec": Configured("gec", task, metric, cfg(), no_stop=True),
               "invalid_stop": Configured("invalid_stop", task, metric, cfg(), no_stop=False),
               "batched": Configured("batched", task, metric, cfg(batched=True), no_stop=False)}
    if has_batched_proxy():
        runners["batched_proxy"] = Configured("batched_proxy", task, metric,
                                              cfg(batched=True, batch=16), no_stop=False)
    runners["multi_fidelity"] = Configured("multi_fidelity", task, metric,
                                           cfg(batched=True, batch=16, fidelity=fidelity),
                                           no_stop=False)
    samples = {name: exprs[:n_naive] if name == "naive" else exprs[:n] for name in runners}
    wall = dict.fromkeys(runners, 0.0)
    order = list(runners)
    for part, names in ((0, order), (1, order[::-1])):
        for name in names:
            s = samples[name]
            half = s[:len(s) // 2] if part == 0 else s[len(s) // 2:]
            wall[name] += runners[name].run(half)
        log(f"  half {part + 1}/2 done")

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
                     "invalid": [0, 0, len(naive.runs) - len(full)], "agree": None,
                     "proxy_steps": steps * len(naive.runs)}
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
                      "agree": f"{sum(same)}/{len(same)}", "proxy_steps": proxy_steps_spent(r),
                      "stages_s": {k: round(v["seconds"], 2) for k, v in st.items()}}
    base_rate = rows["naive"]["charged_s"] / rows["naive"]["n"]
    for row in rows.values():
        row["s_per_cand"] = row["charged_s"] / row["n"]
        row["speedup"] = base_rate / row["s_per_cand"]
        # the speed-up's limit when a proxy training costs far more than screening a candidate
        row["bound"] = row["n"] / row["trained"] if row["trained"] else None
    summary = {
        "speedup": {k: round(r["speedup"], 2) for k, r in rows.items()},
        "s_per_candidate": {k: round(r["s_per_cand"], 4) for k, r in rows.items()},
        "candidates": {k: r["n"] for k, r in rows.items()},
        "trained": {k: r["trained"] for k, r in rows.items()},
        "invalid": {k: r["invalid"] for k, r in rows.items()},
        "gec_hits": {k: r["gec_hits"] for k, r in rows.items()},
        "proxy_steps_spent": {k: r["proxy_steps"] for k, r in rows.items()},
        "fidelity_ladder": fidelity.ladder(steps),
        "bound": {k: None if r["bound"] is None else round(r["bound"], 2) for k, r in rows.items()},
        "task": task.name, "metric": metric, "proxy_steps": steps, "lrp_steps": lrp_steps,
        "lrp_width": lrp.spatial_size,
        "full_training_s": round(full_s, 3), "loop_s": round(loop_s, 3),
        "setup_s": round(setup_s, 1), "seed": seed,
        "threads": torch.get_num_threads(), "paper": PAPER,
    }
    return {"rows": rows, "summary": summary}
