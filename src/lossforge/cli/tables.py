"""Rich tables of lossforge results for the terminal: the zoo and task catalogues, task checks, ``evaluate``
comparisons, studies (funnel, hall of fame, best) and ``refine`` rounds. Used by the CLI and the
quickstart."""
from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: The console results are printed to (emoji off: ``:x:`` in a formula stays as typed).
console = Console(emoji=False)


def fmt_number(v: float, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def print_zoo(entries: list[dict]) -> None:
    """``lossforge zoo``: name, loss kind, formula (``(module)`` for a loss written as a module),
    source."""
    table = Table(title="lossforge zoo")
    for col in ("name", "kind", "formula", "source"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e["name"], e.get("kind", ""), e["formula"] or "(module)", e["source"])
    console.print(table)


def print_tasks(entries: list[dict]) -> None:
    """``lossforge tasks``: task, kind, metrics (default first), proxy steps."""
    table = Table(title="lossforge tasks")
    for col in ("task", "kind", "metrics (default first)", "proxy steps"):
        table.add_column(col)
    for t in entries:
        table.add_row(t["task"], t["kind"], ", ".join(t["metrics"]), str(t["proxy_steps"]))
    console.print(table)


_LEVEL_STYLE = {"ok": "green", "warning": "yellow", "error": "bold red"}


def print_task_check(report: dict) -> None:
    """``lossforge tasks --check``: one row per finding (level coloured: green ok, yellow warning,
    red error) with what was checked, what was found and the fix; then a one-line verdict."""
    table = Table(title=f"lossforge tasks --check {report['spec']}")
    table.add_column("", no_wrap=True)
    table.add_column("check", overflow="fold")
    table.add_column("found", overflow="fold", ratio=3)
    fixes = any(f["fix"] for f in report["findings"])
    if fixes:
        table.add_column("fix", overflow="fold", ratio=2)
    for f in report["findings"]:
        style = _LEVEL_STYLE.get(f["level"], "")
        cells = [Text(f["level"], style=style), Text(f["what"]), Text(f["detail"])]
        table.add_row(*cells, *([Text(f["fix"], style=style)] if fixes else []))
    console.print(table)
    n_err, n_warn = report["errors"], report["warnings"]
    if n_err:
        console.print(f"[bold red]{n_err} error(s)[/], {n_warn} warning(s): fix the errors and run "
                      "the check again.", highlight=False)
    else:
        console.print(f"[bold green]ready[/]: {n_warn} warning(s); the task can be searched "
                      f"({report['seconds']:.1f} s).", highlight=False)


def print_comparison(result) -> None:
    """The evaluate table: one row per loss, mean ± std per metric, Δ vs baseline with p-value."""
    table = Table(title=f"{result.task} — {result.split} split, {len(result.seeds)} seed(s), "
                        f"{result.steps} steps; Δ and Welch p vs {result.baseline}")
    table.add_column("loss", overflow="fold")
    table.add_column("runs")
    for m in result.metrics:
        arrow = "↑" if result.higher_is_better[m] else "↓"
        table.add_column(f"{m} {arrow}", justify="right")
    for row in result.rows:
        cells = [row.loss, f"{row.runs - row.invalid}/{row.runs}"]
        for m in result.metrics:
            cell = f"{fmt_number(row.mean[m])} ± {fmt_number(row.std[m])}"
            if row.loss != result.baseline:
                cell += f"\nΔ {row.delta[m]:+.4f} (p={fmt_number(row.p_value[m], 3)})"
            cells.append(cell)
        table.add_row(*cells)
    console.print(table)


def print_study(summary: dict) -> None:
    """A study's ``Study.summary()``: settings, funnel counts, hall of fame, best, refine rounds."""
    console.print(f"[bold]{summary['path']}[/]: task {summary['task']}, metric {summary['metric']}, "
                  f"strategy {summary['strategy']} (space {summary['space']}), seed {summary['seed']}; "
                  f"explored {summary['explored']}/{summary['budget']}")
    if summary["joint"] or summary["slot"] != "loss":
        fixed = ", ".join(f"{k}={v}" for k, v in summary["fixed"].items()) or "defaults"
        console.print("searching every loss slot jointly" if summary["joint"] else
                      f"searched slot {summary['slot']} (other slots: {fixed})")
    funnel = Table(title="funnel")
    for col in ("stage", "in", "out", "seconds"):
        funnel.add_column(col, justify="right" if col != "stage" else "left")
    for name, st in summary["stats"].items():
        funnel.add_row(name, str(st["in"]), str(st["out"]), f"{st['seconds']:.1f}")
    console.print(funnel)
    if summary.get("fidelity"):
        print_fidelity(summary["fidelity"])
    hof = Table(title="hall of fame (Pareto: fitness vs size)")
    for col in ("rank", "fitness", "size", "formula"):
        hof.add_column(col, overflow="fold")
    for i, h in enumerate(summary["hall_of_fame"], 1):
        shown = f"\n= {h['display_formula']} + const (same gradient)" if h.get("stripped") else ""
        hof.add_row(str(i), f"{h['fitness']:.4f}", str(h["size"]), h["formula"] + shown)
    console.print(hof)
    if summary["best"]:
        console.print(f"[bold green]best[/] ({summary['best']['fitness']:.4f}): {summary['best']['formula']}")
        if summary["best"].get("stripped"):  # lossforge.expr.strip: what show and export drop
            console.print(f"  = {summary['best']['display_formula']} + const: "
                          f"{summary['best']['stripped']}", markup=False, highlight=False)
    from lossforge.evaluation.baseline import describe

    console.print(describe(summary.get("baseline"),
                           summary["best"]["fitness"] if summary["best"] else None), markup=False)
    if summary.get("refine"):
        print_refine(summary["refine"])
    if summary.get("proxy_optimizers"):  # a search under several optimizers (issue 18)
        from lossforge.cli.transfer_tables import proxy_optimizer_table

        console.print(proxy_optimizer_table(summary["proxy_optimizers"]))
    if summary.get("panel"):
        print_panel(summary["panel"])
    if summary.get("ties"):
        print_ties(summary["ties"])
    if summary.get("checked"):
        print_checked(summary["checked"])


def print_fidelity(fid: dict) -> None:
    """Multi-fidelity rungs of a study: how many candidates stopped at each rung length, and the
    proxy steps and seconds spent."""
    cfg = fid.get("settings") or {}
    brackets = "1 (measured)" if cfg.get("min_steps") == "auto" else (cfg.get("brackets")
                                                                       or "2 (default)")
    t = Table(title=f"rungs ({cfg.get('kind', 'asha')}, eta {cfg.get('eta')}, brackets {brackets})")
    for col in ("steps", "stopped here"):
        t.add_column(col, justify="right")
    for steps, n in fid["stopped_at"].items():
        t.add_row(str(steps), str(n))
    console.print(t)
    console.print(f"{fid['candidates']} candidates trained in rungs: {fid['steps_spent']} proxy "
                  f"steps, {fid['seconds']:.1f} s")
    from lossforge.evaluation.fidelity import best_rung_warning
    from lossforge.evaluation.rung_check import study_text as rung_check_text

    if rung_check_text(fid):
        console.print(rung_check_text(fid), markup=False)

    warning = best_rung_warning(fid.get("best_rung"))
    if warning:
        console.print(f"[bold yellow]warning[/]: {warning}")


def print_rung_check(d: dict) -> None:
    """``lossforge rung-check``: per rung, ρ against the full-length fitness and the share of the
    final top 3 it would promote; the choice and the flags."""
    t = Table(title=f"rung check: {d['task']} ({d['metric']}), {len(d['losses'])} losses, "
                    f"{d['seconds']:.0f} s")
    for col in ("rung steps", "spearman rho", "top-3 promoted", "may cut"):
        t.add_column(col, justify="right")
    for steps, rho, share, ok in zip(d["rungs"], d["spearman"], d["promoted"], d["passes"]):
        t.add_row(str(steps), f"{rho:.2f}", f"{share:.2f}", "yes" if ok else "no")
    console.print(t)
    console.print(f"use: lossforge search ... {d['flags']}", markup=False)


def print_refine(state: dict) -> None:
    """The rounds of ``lossforge refine`` stored in a study, one table per finished round."""
    for r in state["results"]:
        t = Table(title=f"refine round {r['round']}: {r['steps']} steps, seeds {r['seeds']}, "
                        f"keep {r['keep']} (validation {state['metric']})")
        for col in ("rank", "mean", "std", "invalid", "search fitness", "formula"):
            t.add_column(col, overflow="fold")
        for s in r["standings"]:
            t.add_row(str(s["rank"]) + (" *" if s["kept"] else ""), fmt_number(s["mean"]),
                      fmt_number(s["std"]), str(s["invalid"]),
                      fmt_number(state["search_fitness"].get(s["loss"], math.nan)), s["loss"])
        console.print(t)
    if state["results"]:
        console.print(f"[bold green]refined best[/]: {state['survivors'][0]}")


def print_panel(panel: dict) -> None:
    """The transfer panel (:func:`lossforge.transfer.panel_result`): the losses × settings table
    of :mod:`lossforge.cli.transfer_tables` (fits 80 columns), its legend, the tie-break and the
    verdict (the recommended loss, or "no searched loss transferred: …")."""
    from lossforge.cli.transfer_tables import legend, panel_table

    console.print(panel_table(panel))
    for line in legend(panel):
        console.print(line, highlight=False, markup=False)
    tb = panel.get("tie_break") or {}
    if tb.get("seeds_added"):
        console.print(f"tie at the top ({len(tb['tied'])} losses within one seed's noise): "
                      f"seeds {tb['seeds_added']} added to them", highlight=False)
    if not panel["complete"]:
        console.print("[yellow]panel incomplete[/]: run it again to finish", highlight=False)
        return
    console.print(f"[bold]panel best[/]: {panel['best']}", highlight=False)
    verdict = panel.get("verdict") or {}
    if verdict.get("text"):
        style = "bold green" if verdict.get("recommended") else "bold yellow"
        head, _, rest = verdict["text"].partition(": ")
        console.print(Text.assemble((head, style), ": " + rest))


def print_ties(ties: dict) -> None:
    """How many distinct trained losses are tied with the search's best."""
    line = f"{ties['exact']} distinct loss(es) share the best search fitness"
    if ties.get("within_noise") is not None:
        line += (f"; {ties['within_noise']} are within one seed's noise of it "
                 f"(sigma {ties['sigma']:.4f}, from the transfer panel)")
    console.print(line, highlight=False)


def print_checked(checked: dict) -> None:
    """Under which setups the recommended (or exported) loss was checked, with the warning."""
    console.print(f"checked {checked['formula']} under: " + "; ".join(checked["setups"]),
                  highlight=False, soft_wrap=True)
    for key in ("warning", "panel_warning"):
        if checked.get(key):
            console.print(Text.assemble(("warning:", "yellow"), " " + checked[key]),
                          soft_wrap=True)


__all__ = ["console", "fmt_number", "print_comparison", "print_checked", "print_fidelity", "print_panel",
           "print_refine", "print_study", "print_ties",
           "print_task_check", "print_tasks", "print_zoo"]
