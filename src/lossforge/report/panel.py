"""The transfer panel's section of the HTML report (issue 18): a losses × settings table whose cells
are coloured by the difference to CE (the panel's reference), each with ``mean ± std`` and ``Δ``
with Welch's p vs CE; the settings in words, the panel's verdict, and under which setups the
recommended loss was checked (:func:`lossforge.transfer.checked_under`).

Colour: green where the loss is better than the reference, red where worse (in the metric's
direction), with an opacity proportional to ``|Δ|`` over the largest ``|Δ|`` of the table (at
most 0.55, so the text stays readable); cells with p < 0.05 are bold. The reference's own row is
uncoloured.
"""
from __future__ import annotations

import html
import math
from typing import Any

#: The strongest background opacity (the cell with the largest ``|Δ|``).
MAX_ALPHA = 0.55


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, digits: int = 4) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def cell_colour(delta: float | None, scale: float, higher_is_better: bool) -> str | None:
    """The CSS background of a cell: ``rgba(0,150,0,a)`` (better) or ``rgba(200,0,0,a)``
    (worse) with ``a = MAX_ALPHA * |delta| / scale`` to 2 decimals; ``None`` when ``a`` is 0 or
    undefined."""
    if delta is None or not math.isfinite(delta) or delta == 0 or not scale > 0:
        return None
    a = round(MAX_ALPHA * min(1.0, abs(delta) / scale), 2)
    if a == 0:
        return None
    better = (delta > 0) == higher_is_better
    return f"rgba(0,150,0,{a:g})" if better else f"rgba(200,0,0,{a:g})"


def panel_html(panel: dict[str, Any], checked: dict[str, Any] | None) -> str:
    """The ``<h2>Transfer panel</h2>`` section for ``panel``
    (:func:`lossforge.transfer.panel_result`) and ``checked`` (the recommended loss's setups)."""
    from lossforge.transfer import Setting

    ref, hib = panel["reference"], panel["higher_is_better"]
    settings = [st["name"] for st in panel["settings"]]
    deltas = [c["delta"] for by in panel["cells"].values() for lo, c in by.items()
              if lo != ref and c["delta"] is not None and math.isfinite(c["delta"])]
    scale = max((abs(d) for d in deltas), default=0.0)
    out = ["<h2>Transfer panel</h2>",
           f'<p class="muted">Validation {_e(panel["metric"])}, seeds {_e(panel["spec"]["seeds"])}; '
           f"each cell: mean ± std over the seeds, Δ and Welch p vs {_e(ref)}; green better, red "
           f"worse than {_e(ref)} (darker: larger |Δ|; bold: p &lt; 0.05). Ranked by the worst "
           "rank over the settings, ties by the mean metric over them.</p>",
           '<table class="panel"><tr><th>rank</th><th>worst rank</th><th>loss</th>'
           + "".join(f"<th>{_e(s)}</th>" for s in settings) + "</tr>"]
    for r in panel["ranking"]:
        row = [f"<td>{r['rank']}</td><td>{r['worst_rank']}</td>",
               f'<td class="f">{_e(r["loss"])}</td>']
        for s in settings:
            row.append(_cell_html(panel["cells"][s][r["loss"]], r["loss"] == ref, scale, hib))
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</table>")
    words = [f"<b>{_e(st['name'])}</b>: {_e(Setting(**st).describe(panel['task_optimizer']))}"
             for st in panel["settings"]]
    out.append(f'<p class="muted">Settings — {"; ".join(words)}.'
               + (f" Skipped: {_e(', '.join(panel['skipped']))}." if panel.get("skipped") else "")
               + "</p>")
    if not panel["complete"]:
        out.append("<p><b>Panel incomplete</b>: run <code>lossforge refine STUDY --panel</code> "
                   "again with the same options to finish it.</p>")
    elif panel.get("verdict"):
        cls = "verdict-ok" if panel["verdict"]["recommended"] else "verdict-none"
        out.append(f'<p class="{cls}"><b>{_e(panel["verdict"]["text"])}</b></p>')
    if checked:
        out.append(checked_html(checked))
    return "\n".join(out)


def _cell_html(c: dict[str, Any], is_ref: bool, scale: float, hib: bool) -> str:
    text = f"{_num(c['mean'])} ± {_num(c['std'])}"
    style = ""
    if not is_ref:
        p = c["p"]
        sig = p is not None and math.isfinite(p) and p < 0.05
        d = c["delta"]
        delta = "—" if d is None or not math.isfinite(d) else f"{d:+.4f}"
        text += f"<br>Δ {delta} (p={_num(p, 3)})"
        if sig:
            text = f"<b>{text}</b>"
        colour = cell_colour(d, scale, hib)
        style = f' style="background:{colour}"' if colour else ""
    if c["invalid"]:
        text += f"<br>{c['invalid']} invalid"
    return f"<td{style}>{text}</td>"


def checked_html(checked: dict[str, Any]) -> str:
    """The setups-checked line of the recommended loss, with its warnings."""
    out = [f'<p class="checked">Checked <code>{_e(checked["formula"])}</code> under: '
           + "; ".join(_e(s) for s in checked["setups"]) + ".</p>"]
    for key in ("warning", "panel_warning"):
        if checked.get(key):
            out.append(f'<p class="warning"><b>Warning:</b> {_e(checked[key])}</p>')
    return "\n".join(out)



def transfer_html(extras: dict[str, Any]) -> str:
    """The report's transfer part from :func:`lossforge.transfer.show_extras`: the panel section
    when a panel is stored, else the setups the best loss was checked under (with the warning
    that it was one optimizer only)."""
    if extras.get("panel"):
        return panel_html(extras["panel"], extras.get("checked"))
    if extras.get("checked"):
        return "<h2>Setups checked</h2>\n" + checked_html(extras["checked"])
    return ""


__all__ = ["MAX_ALPHA", "cell_colour", "checked_html", "panel_html", "transfer_html"]
