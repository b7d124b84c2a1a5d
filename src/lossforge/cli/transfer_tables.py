"""The transfer panel in the terminal (``show``, ``refine --panel``): a losses × settings table that
fits 80 columns, with the formulas and settings spelled out below it, and the panel's verdict.

The table has one row per loss, labelled ``L1``, ``L2``, … for the searched losses (``ce`` and
short baseline names as they are) and one column per setting (names of more than 7 characters
abbreviated, e.g. ``steps x2`` -> ``stepsx2``); each cell holds four short lines: the mean, ``±``
the standard deviation, ``Δ`` to the reference (CE) and the Welch p-value, coloured green (better,
p < 0.05) or red (worse, p < 0.05). With the default six settings a row is at most 78 characters
wide, so it never wraps in an 80-column terminal; the legend lines below may wrap like text.
"""
from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

#: The widest setting name kept as the column header.
HEADER_WIDTH = 7


def loss_labels(panel: dict[str, Any]) -> dict[str, str]:
    """Loss -> its row label: ``L1``, ``L2``, … for the searched losses in panel order; CE and the
    baseline keep their name when it has at most 4 characters, else ``B1``, ``B2``, …"""
    from lossforge.transfer import baseline_losses

    base = set(baseline_losses(panel))
    labels, n_searched, n_base = {}, 0, 0
    for loss in panel["losses"]:
        if loss in base and len(loss) <= 4:
            labels[loss] = loss
        elif loss in base:
            n_base += 1
            labels[loss] = f"B{n_base}"
        else:
            n_searched += 1
            labels[loss] = f"L{n_searched}"
    return labels


def setting_headers(settings: list[dict[str, Any]]) -> dict[str, str]:
    """Setting name -> column header of at most :data:`HEADER_WIDTH` characters: the name; without
    its spaces; the part before ``=`` (``arch=resnet`` -> ``arch``); else ``S<k>``."""
    out = {}
    for k, st in enumerate(settings, 1):
        name = st["name"]
        for cand in (name, name.replace(" ", ""), name.split("=")[0]):
            if len(cand) <= HEADER_WIDTH and cand not in out.values():
                out[name] = cand
                break
        else:
            out[name] = f"S{k}"
    return out


def _short(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _p(p: float | None) -> str:
    return "p=—" if p is None else "p<.001" if p < 0.001 else f"p={p:.2f}" if p < 0.995 else "p=1"


def _cell(c: dict[str, Any], is_ref: bool, sign: int) -> Text:
    text = Text(_short(c["mean"]))
    text.append(f"\n±{_short(c['std'])}")
    if not is_ref and c["delta"] is not None:
        p = c["p"]
        style = "" if p is None or p >= 0.05 else "green" if sign * c["delta"] > 0 else "red"
        text.append(f"\nΔ{c['delta']:+.3f}\n{_p(p)}", style=style)
    if c["invalid"]:
        text.append(f"\n{c['invalid']} inv.", style="red")
    return text


def panel_table(panel: dict[str, Any]) -> Table:
    """The losses × settings table of ``panel`` (:func:`lossforge.transfer.panel_result`), best
    first, compact enough for 80 columns (module docstring)."""
    ref, sign = panel["reference"], 1 if panel["higher_is_better"] else -1
    labels, headers = loss_labels(panel), setting_headers(panel["settings"])
    t = Table(title=f"transfer panel: validation {panel['metric']}, Δ and p vs {ref}",
              box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("worst", justify="right", no_wrap=True)
    t.add_column("loss", no_wrap=True)
    for st in panel["settings"]:
        t.add_column(headers[st["name"]], justify="right", no_wrap=True)
    for r in panel["ranking"]:
        cells = [_cell(panel["cells"][st["name"]][r["loss"]], r["loss"] == ref, sign)
                 for st in panel["settings"]]
        t.add_row(str(r["rank"]), str(r["worst_rank"]), labels[r["loss"]], *cells)
    return t


def legend(panel: dict[str, Any]) -> list[str]:
    """The lines below the table: each setting in words, each loss label's formula, the seeds
    and the ranking rule."""
    from lossforge.transfer import Setting

    headers, labels = setting_headers(panel["settings"]), loss_labels(panel)
    tuned = panel.get("sgd_lr") or {}
    lines = [f"seeds {panel['spec']['seeds']}; ranked by worst rank over the settings, ties by "
             "mean metric over them"]
    for st in panel["settings"]:
        words = Setting(**st).describe(panel["task_optimizer"])
        if st["name"] == "sgd" and tuned.get("grid"):
            words += f" (lr tuned for {tuned['loss']} over {tuned['grid']})"
        head = headers[st["name"]]
        lines.append(f"{head} = {st['name']}: {words}" if head != st["name"]
                     else f"{head}: {words}")
    for loss, label in labels.items():
        if label != loss:
            lines.append(f"{label} = {loss}")
    if panel.get("skipped"):
        lines.append(f"settings skipped: {', '.join(panel['skipped'])}")
    return lines


def proxy_optimizer_table(info: dict[str, Any]) -> Table:
    """The hall of fame of a search under several optimizers
    (:func:`lossforge.transfer.proxy_optimizers`): fitness (the worst) and the validation metric
    under each optimizer; the baseline's row first."""
    t = Table(title=f"proxy under {', '.join(info['optimizers'])}: fitness = the worst "
                    f"(validation {info['metric']})", box=box.SIMPLE_HEAD)
    t.add_column("fitness", justify="right")
    for o in info["optimizers"]:
        lr = info["lrs"].get(o)
        t.add_column(o + (f" lr {lr:g}" if lr else ""), justify="right")
    t.add_column("formula", overflow="fold")
    base = info.get("baseline")
    if base:
        t.add_row(_short(base.get("fitness"), 4),
                  *[_short(base["by_optimizer"].get(o), 4) for o in info["optimizers"]],
                  f"baseline {base.get('loss', '')}")
    for e in info["losses"]:
        t.add_row(_short(e["fitness"], 4),
                  *[_short(e["by_optimizer"].get(o), 4) for o in info["optimizers"]], e["formula"])
    return t


__all__ = ["HEADER_WIDTH", "legend", "loss_labels", "panel_table", "proxy_optimizer_table",
           "setting_headers"]
