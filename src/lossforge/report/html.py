"""The HTML page of ``lossforge report`` (:mod:`lossforge.report.figures` makes the figures): one
self-contained ``index.html`` — no scripts, no external resources — from the study's data, the
figure files and the typeset formulas."""
from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any

from lossforge.evaluation.candidate import FAILED, INVALID, STAGES, STOPPED_BY, TRAINED

#: Every final status, in funnel order: those a stage stops a candidate with, then how proxy
#: training ends.
_STATUSES = tuple(STOPPED_BY[st] for st in STAGES if st in STOPPED_BY) + (TRAINED, INVALID, FAILED)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.f { text-align: left; font-family: ui-monospace, monospace; }
img.plot { width: 100%; max-width: 960px; border: 1px solid #eee; }
img.formula { max-width: 100%; margin: 0.3em 0; }
code { background: #f5f5f5; padding: 0.1em 0.3em; }
.muted { color: #777; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else _e(v)


def _formula_block(formula: str, typeset: dict | None) -> str:
    parts = []
    if typeset and typeset.get("png"):
        parts.append(f'<img class="formula" src="{_e(typeset["png"])}" alt="{_e(formula)}">')
    parts.append(f"<div><code>{_e(formula)}</code></div>")
    from lossforge.expr.strip import display_fields  # without constant terms, as in show/export

    shown = display_fields(formula)
    if shown["stripped"]:
        parts.append(f'<div class="muted">= <code>{_e(shown["display_formula"])}</code> + const '
                     f'(same gradient): {_e(shown["stripped"])}</div>')
    return "\n".join(parts)


def page(data: dict, figures: dict[str, str], losses: list[dict], best_latex) -> str:
    """The report page: ``data`` from :func:`lossforge.report.read_study`, ``figures`` the PNG file names by
    plot, ``losses`` the top losses with their typeset formulas, ``best_latex`` the best loss's."""
    s = data["settings"]
    created = data["created"]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "—"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>lossforge report — {_e(Path(data['path']).name)}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>lossforge study <code>{_e(Path(data['path']).name)}</code></h1>",
           f'<p class="muted">Made from the study file alone ({_e(data["path"])}, created {when}); '
           f"report written {time.strftime('%Y-%m-%d %H:%M')}.</p>",
           "<table><tr><th>task</th><th>metric</th><th>strategy</th><th>space</th><th>seed</th>"
           "<th>explored / budget</th></tr>",
           f"<tr><td>{_e(s.get('task'))}</td><td>{_e(s.get('metric'))}</td><td>{_e(s.get('strategy'))}</td>"
           f"<td>{_e(s.get('space'))}</td><td>{_e(s.get('seed'))}</td>"
           f"<td>{data['explored']} / {_e(s.get('budget'))}</td></tr></table>"]
    best = data["best"]
    out.append("<h2>Best loss</h2>")
    if best is None:
        out.append("<p>No candidate has been trained yet.</p>")
    else:
        out.append(f"<p>fitness <b>{_num(best.fitness)}</b> ({_e(data['metric'])}), size {best.size}</p>")
        out.append(_formula_block(best.formula, best_latex))
    out.append(_baseline_html(data.get("baseline"), None if best is None else best.fitness))
    if data.get("transfer"):  # the transfer panel and the setups the best loss was checked under
        from lossforge.report.panel import transfer_html

        out.append(transfer_html(data["transfer"]))
    out.append("<h2>Search progress</h2>")
    out.append(f'<img class="plot" src="{_e(figures["progress"])}" alt="best and median fitness '
               'over explored candidates">')
    out.append("<h2>Funnel</h2>")
    out.append(f'<img class="plot" src="{_e(figures["funnel"])}" alt="funnel stage counts">')
    out.append("<table><tr><th>stage</th><th>in</th><th>out</th><th>seconds</th></tr>")
    for name in STAGES:
        st, extra = data["stats"][name], ""
        if name == STAGES[-1]:  # proxy training: trained, invalid or failed
            extra = f" (invalid {st['invalid']}, failed {st['failed']})"
        out.append(f"<tr><td class=\"f\">{_e(name)}</td><td>{st['in']}</td><td>{st['out']}{extra}</td>"
                   f"<td>{st['seconds']:.1f}</td></tr>")
    out.append("</table>")
    if data.get("fidelity"):
        out.append(_rungs_html(data["fidelity"], figures.get("rungs")))
    out.append("<h2>Hall of fame</h2>")
    out.append(f'<img class="plot" src="{_e(figures["pareto"])}" alt="fitness against size">')
    if data["hof"]:
        metric_names = sorted({m for h in data["hof"] for m in h.metrics})
        out.append("<table><tr><th>rank</th><th>fitness</th><th>size</th>"
                   + "".join(f"<th>{_e(m)}</th>" for m in metric_names) + "<th>formula</th></tr>")
        for k, h in enumerate(data["hof"], 1):
            out.append(f"<tr><td>{k}</td><td>{_num(h.fitness)}</td><td>{h.size}</td>"
                       + "".join(f"<td>{_num(h.metrics.get(m))}</td>" for m in metric_names)
                       + f'<td class="f">{_e(h.formula)}</td></tr>')
        out.append("</table>")
    if losses:
        out.append("<h2>Top losses against cross-entropy</h2>")
        out.append(f'<p class="muted">One example with {data["num_classes"]} classes: the true class '
                   "has probability t, the others share 1 − t equally (z = log p). Left: the loss; "
                   "right: its derivative with respect to t. Regression losses: against the "
                   "residual f − y, next to the squared error.</p>")
        for item in losses:
            h = item["entry"]
            out.append(f"<h3>#{item['rank']} — fitness {_num(h.fitness)}, size {h.size}</h3>")
            out.append(_formula_block(h.formula, item["latex"]))
            out.append(f'<img class="plot" src="{_e(item["plot"])}" alt="loss #{item["rank"]} and '
                       "its gradient against cross-entropy\">")
    if data["evaluation"]:
        out.append(_evaluation_html(data["evaluation"]))
    failed = [r for r in data["rows"] if r.status == FAILED]
    if failed:
        out.append(f"<h2>Failed evaluations ({len(failed)})</h2><table><tr><th>generation</th>"
                   "<th>position</th><th>formula</th><th>reason</th></tr>")
        for r in failed[:50]:
            out.append(f"<tr><td>{r.generation}</td><td>{r.position}</td><td class=\"f\">{_e(r.formula)}</td>"
                       f"<td class=\"f\">{_e(r.details.get('reason', ''))}</td></tr>")
        out.append("</table>")
    counts = {st: sum(r.status == st for r in data["rows"]) for st in _STATUSES}
    out.append('<p class="muted">Statuses: ' + ", ".join(f"{_e(k)} {v}" for k, v in counts.items())
               + ".</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _brackets(cfg: dict) -> str:
    if cfg.get("min_steps") == "auto":
        return "1 (measured by the rung check)"
    return str(cfg.get("brackets") or "2 (default)")


def _rungs_html(fid: dict, figure: str | None) -> str:
    """The multi-fidelity section: the rung settings, the figure (learning curves of the
    candidates that reached the top rung; where candidates stopped) and the table of how many
    candidates stopped at each rung length, with the proxy steps and seconds spent."""
    cfg = fid.get("settings") or {}
    out = ["<h2>Multi-fidelity rungs</h2>",
           f'<p class="muted">{_e(cfg.get("kind", "asha"))}: min steps '
           f'{_e(cfg.get("min_steps") or "max/η²")}, max steps {_e(cfg.get("max_steps") or "proxy steps")}, '
           f'η {_e(cfg.get("eta"))}, brackets {_e(_brackets(cfg))}. '
           f'{fid["candidates"]} candidates trained in rungs: {fid["steps_spent"]} proxy steps, '
           f'{fid["seconds"]:.1f} s.</p>']
    if figure:
        out.append(f'<img class="plot" src="{_e(figure)}" alt="learning curves of the candidates '
                   'that reached the top rung, and how many candidates stopped at each rung">')
    out.append('<table class="rungs"><tr><th>rung steps</th><th>stopped here</th></tr>')
    for steps, n in fid["stopped_at"].items():
        out.append(f"<tr><td>{_e(steps)}</td><td>{n}</td></tr>")
    out.append("</table>")
    from lossforge.evaluation.fidelity import best_rung_warning
    from lossforge.evaluation.rung_check import study_text as rung_check_text

    if rung_check_text(fid):
        out.append(f'<p class="muted">{_e(rung_check_text(fid))}</p>')
    warning = best_rung_warning(fid.get("best_rung"))
    if warning:
        out.append(f'<p class="warning">{_e(warning)}</p>')
    return "\n".join(out)


def _baseline_html(baseline: dict | None, best_fitness: float | None) -> str:
    """The task's baseline loss next to the best found: its proxy fitness (the same training and
    seed as the candidates'), or why there is none ("not measured" for older study files)."""
    from lossforge.evaluation.baseline import describe

    text = describe(baseline, best_fitness)
    if baseline is None:
        text += " (this study file predates baseline measurements)"
    elif baseline.get("seconds") is not None:
        text += (f" — proxy training of {baseline.get('steps')} steps, seed "
                 f"{baseline.get('seed')}, {baseline['seconds']:.1f} s")
    return f'<p class="baseline">{_e(text)}</p>'


def _evaluation_html(ev: dict) -> str:
    """The ``evaluate`` comparison table: mean ± std per metric, Δ and Welch p vs the baseline."""
    metrics = ev.get("metrics", [])
    higher = ev.get("higher_is_better", {})
    out = [f"<h2>Evaluation on {_e(ev.get('task'))}</h2>",
           f"<p class=\"muted\">{_e(ev.get('split'))} split, {len(ev.get('seeds', []))} seed(s), "
           f"{_e(ev.get('steps'))} steps; Δ and Welch p vs {_e(ev.get('baseline'))}.</p>",
           "<table><tr><th>loss</th><th>runs</th>"
           + "".join(f"<th>{_e(m)} {'↑' if higher.get(m, True) else '↓'}</th>" for m in metrics)
           + "</tr>"]
    for row in ev.get("rows", []):
        cells = [f'<td class="f">{_e(row["loss"])}</td>',
                 f"<td>{row['runs'] - row['invalid']}/{row['runs']}</td>"]
        for m in metrics:
            cell = f"{_num(row['mean'].get(m))} ± {_num(row['std'].get(m))}"
            if row["loss"] != ev.get("baseline"):
                d, p = row["delta"].get(m), row["p_value"].get(m)
                cell += (f"<br><span class=\"muted\">Δ {'—' if d is None else f'{d:+.4f}'} "
                         f"(p={_num(p, 3)})</span>")
            cells.append(f"<td>{cell}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)
