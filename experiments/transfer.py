"""Losses that transfer (issue 18): is the loss lossforge recommends still good when the user changes
the optimizer, the learning rate, the length of training or the model?

Writes the ``transfer`` section of ``RESULTS.md`` and ``results/transfer.json``. Per task
(``digits``, ``shapes-seg``; the reduced mode also ``digits-noisy`` and ``digits-lt``,
the tasks where the loss matters):

1. **search** (AutoLoss-Zero evolution, the task's optimizer: Adam) — its recommendation *without
   the panel* is the best loss by proxy fitness (ties: the smaller);
2. **panel** (:func:`lossforge.transfer.transfer_panel`): the search's top losses, CE and the
   task's baseline retrained under the task's setup, SGD (momentum 0.9, lr tuned once for CE), lr
   ×0.5 and ×2, ×2 steps and another architecture (digits: ``mlp``; shapes-seg offers none), on
   fresh seeds, validation split; its recommendation *with the panel* is the best-ranked loss that
   is not worse than CE with Welch p < 0.05 under any setting (or none: "no searched loss
   transferred");
3. **search under Adam and SGD** (``--proxy-optimizers adam,sgd``: every proxy training under
   both, scored by the worst) with the same budget and seed — what it costs in CPU-seconds, and
   whether *its* best loss transfers: it is put through the same panel settings and seeds.

Every number is on the validation split (the panel never computes the test split). CPU-seconds are
``time.process_time()`` of this process (all its threads).

    python experiments/transfer.py --quick     # smoke test (the test suite): tiny, temporary outputs
    python experiments/transfer.py             # reduced mode (sized for ~45 min on a shared 2-core CPU)

``--tasks digits`` runs a subset (the other tasks' entries of the JSON are kept).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as R  # noqa: E402

from lossforge.evaluation.funnel import FunnelConfig  # noqa: E402
from lossforge.refine import candidates  # noqa: E402
from lossforge.study import LossSearch, load_study  # noqa: E402
from lossforge.tasks import get as get_task  # noqa: E402
from lossforge.transfer import (Setting, summarize_panel, transfer_panel,  # noqa: E402
                                worse_under)

SECTION = "transfer"

#: Per task: options (smaller data or model where a mode needs it) and the search budget.
TASKS = {"digits": "digits: 8×8 handwritten digits, `digits-cnn` (other architecture: `mlp`)",
         "shapes-seg": "shapes-seg: procedural segmentation, a small U-Net (no other architecture)",
         "digits-noisy": "digits-noisy: 40 % symmetric label noise on train and val, clean test "
                         "(other architecture: `mlp`)",
         "digits-lt": "digits-lt: long tail, imbalance ratio 100, balanced val and test "
                      "(other architecture: `mlp`)"}

MODES: dict[str, dict[str, Any]] = {
    # the test suite: a few tiny trainings per task, two panel settings, one SGD learning rate
    "quick": {"digits": {"options": {}, "budget": 4, "proxy_steps": 8, "lrp_steps": 20},
              "shapes-seg": {"options": {"size": 16, "n_train": 32, "n_val": 16, "n_test": 16},
                             "budget": 4, "proxy_steps": 4, "lrp_steps": 20},
              "generation": 4, "population": 8, "top": 1, "seeds": 2, "tie_seeds": 0,
              "settings": "task+sgd", "sgd_lr": 0.03, "use_lrp": False},
    # sized for a shared 2-core CPU (~45 min): short proxies, small searches, the full default
    # panel; shapes-seg at 300 steps, where CE reaches ~0.31 val mIoU (0.17 at 60 steps: barely
    # trained, every loss within noise of every other)
    "reduced": {"digits": {"options": {}, "budget": 400, "proxy_steps": 300, "lrp_steps": None},
                "shapes-seg": {"options": {"size": 32, "n_train": 256, "n_val": 64},
                               "budget": 200, "proxy_steps": 300, "lrp_steps": None},
                "digits-noisy": {"options": {"noise": 0.4, "flip": "symmetric"}, "budget": 400,
                                 "proxy_steps": 500, "lrp_steps": None},
                "digits-lt": {"options": {"imbalance": 100.0}, "budget": 400, "proxy_steps": 300,
                              "lrp_steps": None},
                "generation": 10, "population": 20, "top": 4, "seeds": 5, "tie_seeds": 0,
                "settings": "default", "sgd_lr": None, "use_lrp": True},
}


def cpu() -> float:
    return time.process_time()


def run_search(task, cfg: dict[str, Any], tcfg: dict[str, Any], path: Path,
               optimizers: str | None = None) -> dict[str, Any]:
    """One search (``optimizers``: ``None`` = the task's, or e.g. ``"adam,sgd"``); its cost and
    its recommendation without the panel (the best by proxy fitness)."""
    funnel = replace(FunnelConfig(), proxy=replace(FunnelConfig().proxy, steps=tcfg["proxy_steps"],
                                                   optimizers=optimizers))
    if tcfg["lrp_steps"]:
        funnel = replace(funnel, lrp=replace(funnel.lrp, steps=tcfg["lrp_steps"]))
    funnel = replace(funnel, use_lrp=cfg["use_lrp"])
    t0, w0 = cpu(), time.time()
    study = LossSearch(task=task, storage=path, budget=tcfg["budget"], seed=0, funnel=funnel,
                       strategy_options={"batch_size": cfg["generation"],
                                         "population_size": cfg["population"],
                                         "remove": "worst"}).run()
    try:
        top = candidates(study, 1)
        base = study.baseline or {}
        return {"optimizers": optimizers or task.proxy.optimizer, "explored": study.explored,
                "trained": len(study.trained()), "cpu_s": round(cpu() - t0, 1),
                "wall_s": round(time.time() - w0, 1),
                "best": top[0][0] if top else None, "best_fitness": top[0][1] if top else None,
                "baseline_fitness": base.get("fitness")}
    finally:
        study.close()


def panel_settings(cfg: dict[str, Any], steps: int) -> list[Setting] | None:
    """``None`` (the default panel) or the quick mode's two settings."""
    if cfg["settings"] == "default":
        return None
    return [Setting("task", steps=steps),
            Setting("sgd", optimizer="sgd", lr=cfg["sgd_lr"], momentum=0.9, steps=steps)]


def view(panel: dict[str, Any], losses: list[str]) -> dict[str, Any]:
    """The panel restricted to ``losses`` and the reference: its ranking, verdict
    (:func:`lossforge.transfer.transfer_verdict` over these losses only) and cells (setting ->
    mean, std, delta, p, invalid, values), and per loss the settings where it is worse than the
    reference with p < 0.05 (or invalid)."""
    ref = panel["reference"]
    keep = [lo for lo in dict.fromkeys([*losses, ref]) if lo in panel["losses"]]
    values = {st: {lo: panel["cells"][st][lo]["values"] for lo in keep} for st in panel["cells"]}
    state = {**panel, "losses": keep, "baselines": [b for b in panel["baselines"] if b in keep]}
    sub = summarize_panel(state, values)
    fields = ("mean", "std", "delta", "p", "invalid", "values")
    return {"ranking": [{k: r[k] for k in ("loss", "rank", "worst_rank", "mean_metric")}
                        for r in sub["ranking"]],
            "verdict": sub["verdict"], "recommended": sub["recommended"],
            "losses": {lo: {"cells": {st: {k: sub["cells"][st][lo][k] for k in fields}
                                      for st in sub["cells"]},
                            "worse_under": worse_under(sub["cells"], lo, sub["higher_is_better"])}
                       for lo in keep}}


def training_seconds(path: Path, losses: list[str]) -> float:
    """Seconds of the stored panel trainings of ``losses`` (each run's own wall time)."""
    s = load_study(path, readonly=True)
    try:
        return round(sum(r["seconds"] or 0.0 for r in s.store.panel_runs()
                         if r["loss"] in losses), 1)
    finally:
        s.close()


def run_task(name: str, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Both searches, then one panel on the Adam search's study with its top losses and the
    adam,sgd search's best (CE trained once for both); each read through :func:`view`."""
    tcfg = cfg[name]
    task = get_task(name, **tcfg["options"])
    path = work / f"{name}-adam.db"
    R.log(f"{name}: search under {task.proxy.optimizer}")
    plain = run_search(task, cfg, tcfg, path)
    R.log(f"{name}: search under adam,sgd")
    multi = run_search(task, cfg, tcfg, work / f"{name}-adam-sgd.db", "adam,sgd")
    out: dict[str, Any] = {"task": name, "title": TASKS[name], "options": tcfg["options"],
                           "metric": task.default_metric, "steps": tcfg["proxy_steps"],
                           "search": plain, "multi": {"search": multi}, "panel": None}
    if plain["best"] is None:
        return out
    study = load_study(path, readonly=True)
    top = [f for f, _ in candidates(study, cfg["top"])]
    study.close()
    losses = top + ([multi["best"]] if multi["best"] and multi["best"] not in top else [])
    R.log(f"{name}: panel of {len(losses)} losses")
    t0 = cpu()
    panel = transfer_panel(path, top=cfg["top"], seeds=cfg["seeds"], tie_seeds=cfg["tie_seeds"],
                           task=task, losses=losses,
                           settings=panel_settings(cfg, tcfg["proxy_steps"]))
    ref = panel["reference"]
    out["panel"] = {"cpu_s_all": round(cpu() - t0, 1), "reference": ref,
                    "settings": panel["settings"], "skipped": panel["skipped"],
                    "sgd_lr": (panel.get("sgd_lr") or {}).get("lr"), "top": top,
                    "train_s": training_seconds(path, [*top, ref]),
                    **view(panel, top)}
    if multi["best"] is not None:
        v = view(panel, [multi["best"]])
        out["multi"].update(transferred=v["recommended"] == multi["best"],
                            verdict=v["verdict"]["text"], losses=v["losses"],
                            check_train_s=training_seconds(path, [multi["best"]]))
    return out


# --- the RESULTS.md section -----------------------------------------------------------------------
def _fmt_p(p: float | None) -> str:
    return "—" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cell(c: dict[str, Any], is_ref: bool) -> str:
    if c["mean"] is None:
        return "invalid"
    text = f"{c['mean']:.4f} ± {c['std']:.4f}"
    if not is_ref and c["delta"] is not None:
        text += f" (Δ {c['delta']:+.4f}, p {_fmt_p(c['p'])})"
    if c["invalid"]:
        text += f", {c['invalid']} invalid"
    return text


def task_table(t: dict[str, Any]) -> str:
    """Rows: CE, the search's pick (no panel), the panel's pick, the adam,sgd search's pick."""
    p, ref = t["panel"], t["panel"]["reference"]
    settings = [s["name"] for s in p["settings"]]
    rows = [("CE" if ref == "ce" else f"baseline `{ref}`", ref, p["losses"])]
    rows.append(("without the panel (best proxy fitness)", t["search"]["best"], p["losses"]))
    rec = p["recommended"]
    rows.append(("with the panel", rec, p["losses"]) if rec else
                ("with the panel", None, None))
    m = t.get("multi") or {}
    if m.get("losses"):
        rows.append(("search under adam,sgd (its best)", m["search"]["best"], m["losses"]))
    body = []
    for label, loss, cells in rows:
        if loss is None:
            body.append([label, "— (no searched loss transferred)"] + [""] * len(settings))
            continue
        c = cells[loss]["cells"]
        body.append([label, f"`{loss}`"] + [_cell(c[s], loss == ref) for s in settings])
    return R.table(["", "loss"] + settings, body)


def summary(report: dict[str, Any]) -> str:
    """One paragraph over all tasks: how many got a recommendation, and under which settings the
    searched losses were worse than CE (Welch p < 0.05)."""
    panels = [t["panel"] for t in report["tasks"].values() if t["panel"]]
    worse = [w for p in panels for w in p["verdict"]["worse_under"].values()]
    counts = Counter(name for w in worse for name in w)
    by_setting = ", ".join(f"{n} under `{name}`" for name, n in counts.most_common())
    clean = sum(1 for w in worse if not w)
    recommended = [t["task"] for t in report["tasks"].values()
                   if t["panel"] and t["panel"]["verdict"]["recommended"]]
    return (f"**Summary**: {len(recommended)} of {len(panels)} tasks get a recommendation with "
            f"the panel{' (' + ', '.join(recommended) + ')' if recommended else ''}. Of the "
            f"{len(worse)} searched losses put through the panels, {clean} "
            f"{'is' if clean == 1 else 'are'} worse than CE under no setting; worse (p < 0.05): "
            f"{by_setting or 'none'}.\n")


def render(report: dict[str, Any], mode: str, cfg: dict[str, Any]) -> str:
    seeds = list(range(1, cfg["seeds"] + 1))
    parts = ["## Losses that transfer (issue 18)\n",
             f"_{mode.capitalize()} mode; each task names the run that produced it._\n",
             "Per task: an AutoLoss-Zero search under the task's optimizer (Adam); its pick "
             "*without the panel* is the best loss by proxy fitness. The transfer panel "
             f"(`lossforge refine STUDY --panel`, top {cfg['top']}, seeds {seeds}) retrains it "
             "with CE under the settings below and recommends the best-ranked loss (worst rank "
             "over the settings, at or above CE's) that is not worse than CE with Welch p < 0.05 "
             "under any of them. A second search with the same budget and seed trains every "
             "proxy under Adam *and* SGD (`--proxy-optimizers adam,sgd`, fitness = the worse of "
             "the two); its best loss is trained in the same panel (one CE for both) and judged "
             "against CE alone. Cells: validation metric, mean ± std over the seeds, Δ and "
             "Welch p vs CE.\n"]
    parts.append(summary(report))
    for t in report["tasks"].values():
        s = t["search"]
        parts.append(f"### {t['title']}\n")
        if t.get("provenance"):
            parts.append(t["provenance"])
        parts.append(f"Options `{t['options']}`, proxy {t['steps']} steps, metric "
                     f"`{t['metric']}`. Search (Adam): {s['explored']} losses explored, "
                     f"{s['trained']} trained, {s['cpu_s']} CPU-s.")
        if t["panel"] is None:
            parts.append(" No loss reached training: nothing to put through the panel.\n")
            continue
        p = t["panel"]
        words = "; ".join(f"`{st['name']}`: {Setting(**st).describe('adam')}"
                          for st in p["settings"])
        parts.append(f" Panel: {p['train_s']} s of training for the search's top {len(p['top'])} "
                     f"and CE ({p['cpu_s_all']} CPU-s for the whole panel, the adam,sgd search's "
                     f"best included); settings — {words}"
                     + (f"; skipped: {', '.join(p['skipped'])}" if p["skipped"] else "") + ".\n")
        parts.append("\n" + task_table(t) + "\n")
        parts.append(f"**Panel verdict**: {p['verdict']['text']}.\n")
        m = t.get("multi") or {}
        ms = m.get("search")
        if ms:
            cost = (f"search under adam,sgd: {ms['cpu_s']} CPU-s ({ms['trained']} trained) vs "
                    f"{s['cpu_s']} CPU-s for the Adam search ({s['trained']} trained) + "
                    f"{p['train_s']} s of panel training")
            if ms["best"] is None:
                parts.append(f"\n**Adam + SGD during the search**: {cost}; no loss trained.\n")
            else:
                said = "transfers" if m.get("transferred") else "does not transfer"
                parts.append(f"\n**Adam + SGD during the search**: {cost}. Its best, "
                             f"`{ms['best']}` (fitness {ms['best_fitness']:.4f}), {said} — "
                             f"the panel on it (with CE) says: {m.get('verdict')}; its panel "
                             f"trainings took {m.get('check_train_s')} s.\n")
    return "\n".join(parts)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    R.add_mode_arguments(ap, MODES)
    ap.add_argument("--tasks", help=f"comma-separated subset of {', '.join(TASKS)}")
    R.add_output_arguments(ap, "transfer.json")
    args = ap.parse_args(argv)
    args.mode = args.mode or "reduced"
    if args.mode == "full":
        ap.error("there is no full mode yet: run the reduced mode, or --quick")
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = MODES[args.mode]
    names = args.tasks.split(",") if args.tasks else [n for n in TASKS if n in cfg]
    unknown = [n for n in names if n not in TASKS or n not in cfg]
    if unknown:
        known = ", ".join(n for n in TASKS if n in cfg)
        raise SystemExit(f"unknown tasks {unknown} in the {args.mode} mode; choose from {known}")
    work, results_md, json_path = R.outputs(args, "transfer.json", "transfer_")
    quick = args.mode == "quick"
    report: dict[str, Any] = {"mode": args.mode, "config": cfg, "tasks": {}}
    if json_path.exists() and not quick:
        old = json.loads(json_path.read_text())
        if old.get("mode") == args.mode:
            report["tasks"].update(old.get("tasks", {}))
    seeds = list(range(1, cfg["seeds"] + 1))
    return R.run_parts(
        report, "tasks", names,
        lambda name: {**run_task(name, cfg, work), "provenance": R.provenance(seeds, args.mode)},
        json_path, SECTION, lambda r: render(r, args.mode, cfg), results_md)


if __name__ == "__main__":
    main()
