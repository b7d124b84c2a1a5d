"""The live terminal view of a running search (rich): progress toward the budget, the funnel
counts, the last candidate and the current hall of fame, fed by ``LossSearch``'s ``progress``
callback. ``lossforge search`` / ``resume`` show it on stderr; with ``--format json`` it is off.

A resumed study starts from what its file already holds, so the counts are the study's, not the
session's. Outside a terminal (a log file, a pipe) rich prints the final view once, at the end.
"""
from __future__ import annotations

import threading
import time
from operator import itemgetter
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from lossforge.evaluation.candidate import (FAILED, GEC_HIT, INVALID, REJECTED_CHECKS,
                                            REJECTED_LRP, STAGES, STOPPED_BY, TRAINED)
from lossforge.study import load_study, pareto_front

_LOOK = {REJECTED_CHECKS: ("rejected by checks", "yellow"), GEC_HIT: ("GEC hits", "cyan"),
         REJECTED_LRP: ("LRP rejections", "magenta"), TRAINED: ("trained", "green"),
         INVALID: ("invalid", "red"), FAILED: ("failed", "bold red")}
#: Funnel columns: (status, heading, colour); the stages' rejections in ``STAGES`` order, then the
#: proxy stage's outcomes.
FUNNEL = [(status, *_LOOK[status]) for status in
          [STOPPED_BY[stage] for stage in STAGES if stage in STOPPED_BY] + [TRAINED, INVALID, FAILED]]


class SearchView:
    """State of a search as its results arrive, and its rich rendering.

    ``update(state)`` is the ``progress`` callback; each ``(generation, position)`` counts once.
    """

    def __init__(self, title: str = "searching", study: str | Path | None = None,
                 budget: int | None = None, executor: str = "", top: int = 5):
        self.title, self.budget, self.executor, self.top = title, budget, executor, top
        self.counts: dict[str, int] = {status: 0 for status, _, _ in FUNNEL}
        self.seen: set[tuple[int, int]] = set()
        self.trained: list[tuple[float, int, str]] = []  # (fitness, size, formula), in order
        self.generation: int | None = None
        self.last: dict[str, Any] | None = None
        self.training: dict[str, Any] | None = None  # the last report of a task's own loop
        self.started = time.monotonic()
        self.session = 0  # candidates explored by this run
        self._lock = threading.Lock()  # rich refreshes from its own thread
        if study is not None and Path(study).is_file():
            self._load(study)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[rate]}"))
        self._task = self._progress.add_task(title, total=budget, completed=self.explored, rate="")

    def _load(self, path) -> None:
        try:
            study = load_study(path, readonly=True)
        except Exception:  # the search itself reports a bad file
            return
        try:
            for r in study.candidates:
                self._add(r.generation, r.position, r.status, r.fitness, r.size, r.formula)
            self.budget = self.budget or (study.settings or {}).get("budget")
        finally:
            study.close()

    @property
    def explored(self) -> int:
        return len(self.seen)

    def _add(self, generation, position, status, fitness, size, formula) -> bool:
        if (generation, position) in self.seen:
            return False
        self.seen.add((generation, position))
        self.counts[status] = self.counts.get(status, 0) + 1
        if status == TRAINED and fitness is not None and size is not None:
            self.trained.append((fitness, size, formula))
        return True

    def update(self, state: dict[str, Any]) -> None:
        """The ``LossSearch`` progress callback."""
        with self._lock:
            self._update(state)

    def _update(self, state: dict[str, Any]) -> None:
        if state.get("event") == "report":  # a training in progress (Task.fit's report)
            self.training = state
            return
        if state.get("event") == "rung_check":  # min_steps=auto: measuring the rungs first
            self._progress.update(self._task, description=(
                f"{self.title} · rung check ({state['losses']} zoo losses to "
                f"{state['max_steps']} steps)"))
            return
        if self.training is not None and self.training.get("formula") == state.get("formula"):
            self.training = None
        position = state.get("position", len(self.seen))
        if self._add(state["generation"], position, state["status"], state.get("fitness"),
                     state.get("size"), state.get("formula")):
            self.session += 1
        self.budget = state.get("budget", self.budget)
        self.generation, self.last = state["generation"], state
        minutes = (time.monotonic() - self.started) / 60
        rate = f"{self.session / minutes:.0f}/min" if minutes > 0 and self.session else ""
        self._progress.update(self._task, completed=self.explored, total=self.budget, rate=rate,
                              description=f"{self.title} · generation {self.generation}")

    def hall_of_fame(self) -> list[tuple[float, int, str]]:
        """Pareto front of (fitness ↑, size ↓) as ``(fitness, size, formula)``, best first — the
        rule of ``Study.hall_of_fame`` (:func:`~lossforge.study.pareto_front`)."""
        return pareto_front(self.trained, fitness=itemgetter(0), size=itemgetter(1))

    # --- rendering --------------------------------------------------------------------------------
    def funnel_line(self) -> Text:
        text = Text("funnel: ", style="bold")
        text.append(f"explored {self.explored}")
        for status, heading, colour in FUNNEL:
            text.append(" · ")
            text.append(f"{heading} {self.counts.get(status, 0)}", style=colour)
        return text

    def hof_table(self) -> Table | Text:
        if not self.trained:
            return Text("hall of fame: no loss trained yet", style="dim")
        table = Table(title="hall of fame (Pareto: fitness vs size)", title_justify="left")
        for col in ("rank", "fitness", "size"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("formula", overflow="ellipsis", no_wrap=True)  # one line per loss
        for i, (fitness, size, formula) in enumerate(self.hall_of_fame()[:self.top], 1):
            table.add_row(str(i), f"{fitness:.4f}", str(size), formula)
        return table

    def last_line(self) -> Text:
        if self.last is None:
            return Text(f"starting ({self.executor})" if self.executor else "starting", style="dim")
        s = self.last
        fit = s.get("fitness")
        text = Text("last: ", style="dim")
        text.append(s["status"], style=dict((st, c) for st, _, c in FUNNEL).get(s["status"], ""))
        if fit is not None:
            text.append(f" {fit:.4f}")
        text.append(f"  {s.get('formula', '')}")
        text.truncate(200, overflow="ellipsis")
        if s.get("reason") and s["status"] == FAILED:
            text.append(f"  ({s['reason']})", style="red")
        if self.executor:
            text.append(f"   [{self.executor}]", style="dim")
        return text

    def training_line(self) -> Text:
        """``training: step S · metric value …  formula`` from the last report, or nothing."""
        s = self.training
        if s is None:
            return Text("")
        text = Text("training: ", style="dim")
        text.append(f"step {s.get('step')}")
        for name, value in list(s.get("metrics", {}).items())[:4]:
            text.append(f" · {name} {value:.4g}")
        text.append(f"  {s.get('formula', '')}")
        text.truncate(200, overflow="ellipsis")
        return text

    def __rich__(self):
        with self._lock:
            parts = [self._progress, self.last_line()]
            if self.training is not None:
                parts.append(self.training_line())
            return Group(*parts, self.funnel_line(), self.hof_table())


class LiveView:
    """Context manager showing a :class:`SearchView` live on ``console`` (nothing if disabled)."""

    def __init__(self, console: Console, view: SearchView, enabled: bool = True):
        self.view, self.enabled, self.console = view, enabled, console
        overflow = "ellipsis" if console.is_terminal else "visible"  # a log gets all of the end view
        self._live = (Live(view, console=console, refresh_per_second=4, transient=False,
                           vertical_overflow=overflow) if enabled else None)

    def update(self, state: dict[str, Any]) -> None:
        self.view.update(state)

    def __enter__(self) -> "LiveView":
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            if not self.console.is_terminal:  # rich ends the last line only on a terminal
                self.console.line()
