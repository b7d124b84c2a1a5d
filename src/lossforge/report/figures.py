"""The report's figures: matplotlib figures of a study's data (:func:`lossforge.report.read_study`).

:func:`make_figures` draws progress (with the task's baseline loss as a horizontal line when the
study measured it), funnel, Pareto front, the top losses' curves (:func:`probe_curve`) and, for a
multi-fidelity study, the rungs (:func:`top_rung_curves`: learning curves of the candidates that
reached the top rung; how many stopped at each rung length); :func:`typeset_formula` typesets a formula with mathtext. Plots use
matplotlib's Agg canvas directly (no pyplot, no global backend change); every plot is
``FIGSIZE`` × ``DPI`` = 960 × 540 pixels. The funnel's bars follow
:data:`lossforge.evaluation.candidate.STAGES`.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch

from lossforge.evaluation.candidate import STAGES, TRAINED
from lossforge.expr import parse
from lossforge.expr.interpret import loss_kind, loss_value

#: Size of every plot, inches at ``DPI``: 960 × 540 pixels.
FIGSIZE, DPI = (9.6, 5.4), 100
CE = "-sum_c(y * log(p))"
MSE = "mean_c(square(f - y))"
GIOU = "1 - i / u + (e - u) / e"
#: How the funnel plot shows each stage of ``STAGES``: its name, what the candidates leaving it
#: passed, and the bar's colour.
STAGE_LOOK = {"checks": ("checks", "passed checks", "C1"), "gec": ("GEC", "not a GEC hit", "C9"),
              "lrp": ("LRP", "passed LRP", "C4"), "proxy": ("proxy training", "trained", "C2")}


def parse_formula(text: str):
    """A stored formula: an :class:`Expr`, or a :class:`Bundle` (joint search, one per slot)."""
    from lossforge.expr.bundle import is_bundle_text, parse_bundle

    return parse_bundle(text) if is_bundle_text(text) else parse(text, strict=False)


def _plotted(expr):
    """The expression a loss plot shows: the expression, or a bundle's first slot."""
    return next(iter(expr.values())) if hasattr(expr, "slots") else expr


def make_figures(data: dict[str, Any], top: int = 3) -> dict[str, Any]:
    """The report's matplotlib figures by file stem: progress, funnel, pareto, rungs (only when
    ``data["fidelity"]`` has rung results), loss_1 … loss_top."""
    figures = {"progress": _plot_progress(data["rows"], data["metric"], data.get("baseline")),
               "funnel": _plot_funnel(data["stats"]),
               "pareto": _plot_pareto(data["rows"], data["hof"], data["metric"])}
    fidelity = data.get("fidelity")
    if fidelity and fidelity.get("rungs"):
        figures["rungs"] = _plot_rungs(fidelity, data["metric"])
    for k, entry in enumerate(data["hof"][:top], 1):
        figures[f"loss_{k}"] = _plot_loss(_plotted(parse_formula(entry.formula)), entry.formula,
                                          data["num_classes"], k)
    return figures


def _figure(ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)  # fixed margins: a layout engine doubles the time
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    if ncols == 1:
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.91)
    else:  # room for tick labels of both axes of each panel (a twin axis for the reference)
        fig.subplots_adjust(left=0.1, right=0.92, bottom=0.12, top=0.91, wspace=0.62)
    return fig, axes


def save_figure(fig, path: Path) -> str:
    """Write ``fig`` as a PNG of ``FIGSIZE`` × ``DPI`` pixels; returns the file name."""
    fig.savefig(path, dpi=DPI)
    return path.name


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")


def baseline_fitness(baseline: dict | None) -> float | None:
    """The stored baseline's fitness (:mod:`lossforge.evaluation.baseline`), ``None`` unless it
    was measured and trained to a finite value."""
    if not baseline or baseline.get("status") != TRAINED:
        return None
    fitness = baseline.get("fitness")
    return float(fitness) if isinstance(fitness, (int, float)) and math.isfinite(fitness) else None


def _plot_progress(rows, metric: str, baseline: dict | None = None):
    """Trained candidates' fitness, best so far and running median over the explored
    candidates; the task's baseline loss (same proxy training) as a horizontal dashed line
    labelled ``baseline <loss> (<fitness>)`` when the study measured it."""
    fig, ax = _figure()
    xs, fits, best, median = [], [], [], []
    trained: list[float] = []
    for i, r in enumerate(rows, 1):
        if r.status == TRAINED and r.fitness is not None:
            trained.append(r.fitness)
            xs.append(i)
            fits.append(r.fitness)
            best.append(max(best[-1], r.fitness) if best else r.fitness)
            median.append(statistics.median(trained))
    reference = baseline_fitness(baseline)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1.2, zorder=2,
                   label=f"baseline {baseline.get('loss', '')} ({reference:.4f})")
    if xs:
        ax.scatter(xs, fits, s=10, color="0.7", label="trained candidate", zorder=1)
        ax.step(xs + [len(rows)], best + best[-1:], where="post", color="C3", lw=2,
                label="best so far", zorder=3)
        ax.plot(xs, median, color="C0", lw=1.5, label="median of trained so far", zorder=2)
    else:
        _empty(ax, "no candidate trained yet")
    if xs or reference is not None:
        ax.legend(loc="best")
    ax.set_xlim(0, max(1, len(rows)))
    ax.set_xlabel("candidates explored")
    ax.set_ylabel(f"fitness ({metric}, higher is better)")
    ax.set_title("Search progress")
    ax.grid(alpha=0.3)
    return fig


def _plot_funnel(stats: dict):
    fig, ax = _figure()
    last = STAGES[-1]  # proxy training: its candidates end trained, invalid or failed
    bars = [("explored", stats[STAGES[0]]["in"], "0.5")]
    bars += [(STAGE_LOOK[st][1], stats[st]["out"], STAGE_LOOK[st][2]) for st in STAGES]
    bars += [("invalid", stats[last]["invalid"], "C3"), ("failed", stats[last]["failed"], "k")]
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    drawn = ax.bar(labels, values, color=[b[2] for b in bars])
    ax.bar_label(drawn, labels=[str(v) for v in values], padding=2)
    ax.set_xlabel(f"funnel stage ({' → '.join(STAGE_LOOK[st][0] for st in STAGES)})")
    ax.set_ylabel("candidates")
    ax.set_title("Funnel: candidates entering each stage, and how proxy trainings ended")
    ax.set_ylim(0, max(1, max(values)) * 1.12)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _plot_pareto(rows, hof, metric: str):
    fig, ax = _figure()
    pts = [(r.size, r.fitness) for r in rows if r.status == TRAINED and r.fitness is not None]
    if pts:
        ax.scatter(*zip(*pts), s=14, color="0.65", label="trained candidates")
        front = sorted((h.size, h.fitness) for h in hof)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="C3", lw=1.5)
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=40, color="C3", zorder=3,
                   label="hall of fame (Pareto front)")
        for k, h in enumerate(hof[:10], 1):
            ax.annotate(f"#{k}", (h.size, h.fitness), textcoords="offset points", xytext=(4, 4),
                        fontsize=8, color="C3")
        ax.legend(loc="best")
    else:
        _empty(ax, "no candidate trained yet")
    ax.set_xlabel("expression size (nodes)")
    ax.set_ylabel(f"fitness ({metric}, higher is better)")
    ax.set_title("Fitness against size")
    ax.grid(alpha=0.3)
    return fig


#: How many of the top-rung learning curves get a colour and a legend entry (the rest are grey).
CURVES_LABELLED = 8


def top_rung_curves(fidelity: dict) -> tuple[int, list[dict]]:
    """From a study's rungs (``study_fidelity``: ``fidelity["rungs"]``, one entry per candidate
    with its finished rungs): ``(top_steps, curves)``. ``top_steps`` is the longest rung any
    candidate trained (the ladder's top when one reached it); ``curves`` are the candidates that
    reached it, best top-rung fitness first (a candidate without fitness there last), each
    ``{"generation", "position", "formula", "steps": [...], "fitness": [...]}`` with one point
    per rung that ended with a fitness, in rung order. ``(0, [])`` without rungs."""
    entries = fidelity.get("rungs") or []
    steps = [r["steps"] for e in entries for r in e["rungs"]]
    if not steps:
        return 0, []
    top = max(steps)
    curves = []
    for e in entries:
        rungs = sorted(e["rungs"], key=lambda r: r["rung"])
        if rungs[-1]["steps"] != top:
            continue
        done = [r for r in rungs if r["fitness"] is not None]
        curves.append({"generation": e["generation"], "position": e["position"],
                       "formula": e["formula"], "steps": [r["steps"] for r in done],
                       "fitness": [r["fitness"] for r in done],
                       "final": rungs[-1]["fitness"]})
    curves.sort(key=lambda c: (c["final"] is None, -(c["final"] or 0.0)))
    for c in curves:
        del c["final"]
    return top, curves


def _plot_rungs(fidelity: dict, metric: str):
    """Left: fitness against proxy steps (log axis, one point per rung) — the candidates that
    reached the top rung as lines (the best :data:`CURVES_LABELLED` coloured and named), the
    candidates that stopped earlier as faint grey lines; right: how many candidates stopped at each
    rung length."""
    fig, (ax_c, ax_b) = _figure(2)
    fig.subplots_adjust(left=0.08, right=0.98, wspace=0.25)  # no twin axes here
    top, curves = top_rung_curves(fidelity)
    reached = {(c["generation"], c["position"]) for c in curves}
    for e in fidelity["rungs"]:  # the pruned ones, for context
        if (e["generation"], e["position"]) in reached:
            continue
        pts = [(r["steps"], r["fitness"]) for r in sorted(e["rungs"], key=lambda r: r["rung"])
               if r["fitness"] is not None]
        if pts:
            ax_c.plot(*zip(*pts), color="0.82", lw=0.8, marker=".", ms=3, zorder=1)
    for k, c in enumerate(curves):
        if not c["steps"]:
            continue
        if k < CURVES_LABELLED:
            short = c["formula"] if len(c["formula"]) <= 38 else c["formula"][:35] + "…"
            ax_c.plot(c["steps"], c["fitness"], color=f"C{k % 10}", lw=1.8, marker="o", ms=4,
                      zorder=3, label=f"#{k + 1} {short}")
        else:
            ax_c.plot(c["steps"], c["fitness"], color="0.45", lw=1.0, marker="o", ms=3, zorder=2)
    if curves:
        ax_c.legend(loc="best", fontsize=7)
    else:
        _empty(ax_c, "no rung trained yet")
    ladder = sorted(int(s) for s in fidelity.get("stopped_at", {}))
    ax_c.set_xscale("log")
    if ladder:
        ax_c.set_xticks(ladder, [str(s) for s in ladder])
        ax_c.minorticks_off()
    ax_c.set_xlabel("proxy training steps (rung)")
    ax_c.set_ylabel(f"fitness ({metric}, higher is better)")
    ax_c.set_title(f"Learning curves: {len(curves)} reached {top} steps", fontsize=10)
    ax_c.grid(alpha=0.3)
    stopped = fidelity.get("stopped_at", {})
    labels = [str(s) for s in stopped]
    values = list(stopped.values())
    drawn = ax_b.bar(labels, values, color="C0")
    ax_b.bar_label(drawn, labels=[str(v) for v in values], padding=2)
    ax_b.set_xlabel("rung (proxy training steps)")
    ax_b.set_ylabel("candidates that stopped there")
    ax_b.set_title("Where candidates stopped", fontsize=10)
    ax_b.set_ylim(0, max([1, *values]) * 1.15)
    ax_b.grid(axis="y", alpha=0.3)
    return fig


def probe_curve(expr, num_classes: int, points: int = 99) -> tuple[list[float], list[float], list[float]]:
    """Loss and d loss / d t over the true-class probability ``t`` in (0, 1) for one example with
    ``num_classes`` classes, the others sharing ``1 - t`` (classification), over the residual
    ``f - y`` in [-3, 3] (regression), or over the horizontal offset in [-2, 2] of a unit predicted
    box from the unit target box (box). Returns ``(xs, values, gradients)``; ``nan`` where
    undefined."""
    regression = loss_kind(expr) == "regression"
    box = loss_kind(expr) == "box"
    if regression or box:
        xs = [-3 + 6 * i / (points - 1) for i in range(points)]
    else:
        xs = [(i + 1) / (points + 1) for i in range(points)]
    values, grads = [], []
    for x in xs:
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        if box:
            from lossforge.expr.kernels import prepare_box

            one = torch.ones((), dtype=torch.float64)
            pred = torch.stack([t, 0 * one, t + 1, one]).reshape(1, 4)
            env, _ = prepare_box(pred, torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64))
        elif regression:
            env = {"f": t.reshape(1, 1), "y": torch.zeros(1, 1, dtype=torch.float64)}
        else:
            rest = (1 - t) / (num_classes - 1)
            p = torch.cat([t.reshape(1), rest.expand(num_classes - 1)]).reshape(1, num_classes)
            y = torch.zeros(1, num_classes, dtype=torch.float64)
            y[0, 0] = 1.0
            env = {"p": p, "y": y, "z": torch.log(p)}
        try:
            value = loss_value(expr, env)
            (grad,) = torch.autograd.grad(value, t, allow_unused=True)
            v = float(value.detach())
            g = 0.0 if grad is None else float(grad)
        except Exception:  # an op undefined here: leave a gap in the curve
            v = g = math.nan
        values.append(v if math.isfinite(v) else math.nan)
        grads.append(g if math.isfinite(g) else math.nan)
    return xs, values, grads


def _limits(values: list[float]) -> tuple[float, float] | None:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    lo, hi = finite[int(0.02 * (len(finite) - 1))], finite[int(0.98 * (len(finite) - 1))]
    pad = 0.08 * (hi - lo) if hi > lo else max(1.0, abs(hi)) * 0.1
    return lo - pad, hi + pad


def _plot_loss(expr, formula: str, num_classes: int, rank: int):
    fig, (ax_l, ax_g) = _figure(2)
    kind = loss_kind(expr)
    regression = kind == "regression"
    ref_name = {"regression": "squared error", "box": "GIoU loss"}.get(kind, "cross-entropy")
    ref = parse({"regression": MSE, "box": GIOU}.get(kind, CE))
    xs, lv, lg = probe_curve(expr, num_classes)
    _, rv, rg = probe_curve(ref, num_classes)
    xlabel = "residual f − y" if regression else f"true-class probability t ({num_classes} classes)"
    grad = "gradient d loss / d f" if regression else "gradient d loss / d t"
    if kind == "box":
        xlabel, grad = "offset of a unit box from the unit target box", "gradient d loss / d offset"
    for ax, ours, theirs, what in ((ax_l, lv, rv, "loss"), (ax_g, lg, rg, grad)):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(what)
        ax.axhline(0, color="0.8", lw=0.8)
        ax.grid(alpha=0.3)
        mine, ref_lim = _limits(ours), _limits(theirs)
        span = lambda lim: (lim[1] - lim[0]) if lim else 0.0  # noqa: E731
        apart = mine and ref_lim and not (0.05 < span(mine) / max(span(ref_lim), 1e-12) < 20)
        ref_ax = ax.twinx() if apart else ax  # scales too different: the reference on its own axis
        lines = ref_ax.plot(xs, theirs, color="0.5", ls="--", lw=1.5,
                            label=ref_name + (" (right axis)" if apart else ""))
        lines += ax.plot(xs, ours, color="C3", lw=2, label=f"#{rank}")
        if apart:
            ref_ax.set_ylim(*ref_lim)
            ref_ax.set_ylabel(f"{ref_name} {what}", color="0.4")
            ax.set_ylim(*mine)
        else:
            lim = _limits(ours + theirs)
            if lim:
                ax.set_ylim(*lim)
        if all(math.isnan(v) for v in ours):
            _empty(ax, "undefined on this probe")
        ax.legend(lines, [ln.get_label() for ln in lines], loc="best")
    short = formula if len(formula) <= 90 else formula[:87] + "…"
    fig.suptitle(f"#{rank}: {short}", fontsize=10)
    return fig


def typeset_formula(formula: str, path: Path) -> dict[str, str | None]:
    """The stored ``formula`` as LaTeX and, when mathtext can typeset it, a PNG of it at ``path``:
    ``{"latex": …, "png": file name or None}``."""
    from matplotlib import mathtext

    expr = parse_formula(formula)
    try:
        latex = expr.to_latex()
    except Exception:
        return {"latex": None, "png": None}
    try:
        mathtext.math_to_image(f"${latex}$", str(path), dpi=200, format="png")
        return {"latex": latex, "png": path.name}
    except Exception:  # mathtext covers a subset of LaTeX: plain text instead
        path.unlink(missing_ok=True)
        return {"latex": latex, "png": None}
