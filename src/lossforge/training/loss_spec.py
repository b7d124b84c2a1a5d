"""Turn what a user names as a loss into an ``nn.Module`` for a task.

A loss may be given as an :class:`Expr`, an ``nn.Module``, a zoo name (``ce``, ``baikal`` …), a
formula (``-sum_c(y * log(p))``) or the path of a ``.py`` file written by ``to_source``. For a task
with several loss slots (:meth:`Task.loss_slots`), a ``dict`` slot -> loss or a text
``"cls=focal; box=giou"`` gives each slot its loss; slots not named keep their ``default``.
A classification loss that reads the class prior ``q`` gets the task's
:meth:`~lossforge.tasks.Task.class_prior` (uniform when the task has none, with a warning).
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lossforge.expr import Expr, ParseError, parse
from lossforge.tasks.base import LossSlot, Task


@dataclass
class LoadedLoss:
    """A loss ready to train with: display ``name``, the ``module`` and its ``expr`` if symbolic.

    For a multi-slot task the loss is composite: ``parts`` maps each slot to its own
    :class:`LoadedLoss` and ``module`` is a :class:`SlotLosses`.
    """

    name: str
    module: nn.Module
    expr: Expr | None = None
    parts: dict[str, "LoadedLoss"] | None = None


class SlotLosses(nn.Module):
    """The training loss of a multi-slot task: ``sum_slots weight * loss_slot(*inputs[slot])``
    with ``inputs = task.slot_inputs(outputs, target)``; ``forward(outputs, target)``."""

    def __init__(self, task: Task, modules: dict[str, nn.Module]):
        super().__init__()
        self.losses = nn.ModuleDict(modules)
        self.weights = {s.name: float(s.weight) for s in task.loss_slots()}
        self._inputs = task.slot_inputs

    def forward(self, outputs, target):
        inputs = self._inputs(outputs, target)
        total = None
        for name, module in self.losses.items():
            value = self.weights[name] * module(*inputs[name])
            total = value if total is None else total + value
        return total


def load_loss(spec, task: Task, slot: str | None = None) -> LoadedLoss:
    """Resolve ``spec`` for ``task``; ``ValueError`` naming the problem when it cannot be used.

    ``slot``: resolve it as the loss of that slot (its kind and variables). Without ``slot``, a
    single-slot task resolves it as its only loss; a multi-slot task (or a ``dict`` spec) goes
    through :func:`load_losses`.
    """
    if slot is None and (isinstance(spec, dict) or len(task.loss_slots()) > 1
                         or (isinstance(spec, str) and _slot_text(spec, task))):
        return load_losses(spec, task)
    try:
        s = task.slot(slot) if slot is not None else task.loss_slots()[0]
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return _load_one(spec, task, s)


def _load_one(spec, task: Task, slot: LossSlot) -> LoadedLoss:
    if isinstance(spec, nn.Module):
        return LoadedLoss(getattr(spec, "formula", type(spec).__name__), spec)
    if isinstance(spec, Expr):
        return _from_expr(str(spec), spec, task, slot)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a loss must be a formula, a zoo name, a .py file or an nn.Module, got {spec!r}")
    from lossforge import zoo

    spec = spec.strip()
    if spec in zoo.names():
        return _from_zoo(spec, task, slot)
    if spec.endswith(".py"):
        return LoadedLoss(Path(spec).stem, load_source_file(spec))
    try:
        expr = parse(spec)
    except ParseError as err:
        raise ValueError(f"{spec!r} is not a zoo name ({', '.join(zoo.names(slot.kind))}), nor a "
                         f".py file, and not a valid formula for task {task.name!r}: {err}") from None
    return _from_expr(spec, expr, task, slot)


def _from_zoo(name: str, task: Task, slot: LossSlot) -> LoadedLoss:
    """Zoo entry ``name`` in its form for the slot's kind (``mse`` on regression: the mean squared
    error; on classification: the Brier score); ``ValueError`` when it has no such form."""
    from lossforge import zoo

    if slot.kind not in zoo.kinds(name):
        raise ValueError(f"zoo loss {name!r} is a {' and '.join(zoo.kinds(name))} loss; "
                         f"{_where(task, slot)} needs a {slot.kind} loss (zoo: "
                         f"{', '.join(zoo.names(slot.kind))})")
    entry = zoo.get(name, slot.kind)
    if entry.expr is not None:  # cb-focal: constants of the task's training set
        return _from_expr(name, entry.expr_for(task), task, slot)
    return LoadedLoss(name, entry.module())


def _where(task: Task, slot: LossSlot) -> str:
    if len(task.loss_slots()) > 1:
        return f"slot {slot.name!r} of task {task.name!r}"
    return f"task {task.name!r}"


def _from_expr(name: str, expr: Expr, task: Task, slot: LossSlot) -> LoadedLoss:
    missing = expr.variables() - slot.variables
    if missing:
        raise ValueError(f"loss {name!r} reads {', '.join(sorted(missing))}, which "
                         f"{_where(task, slot)} does not provide (its variables: "
                         f"{', '.join(sorted(slot.variables))})")
    kw = {"ignore_index": task.ignore_index} if slot.kind == "classification" else {}
    if slot.kind == "classification" and "q" in expr.variables():
        kw["prior"] = task_prior(task, slot)
    return LoadedLoss(name, expr.to_torch(kind=slot.kind, **kw), expr)


def task_prior(task: Task, slot: LossSlot):
    """The class prior ``(C,)`` a classification loss of ``task`` reads as ``q``
    (:meth:`Task.class_prior`; a task-like object without it, or a multi-slot task: ``None``).
    ``None`` stands for the uniform prior, and the loss module warns that it uses it."""
    method = getattr(task, "class_prior", None)
    if not callable(method) or len(task.loss_slots()) > 1 or slot.kind != "classification":
        return None
    return method()


# ---- several slots ---------------------------------------------------------------------------
def _slot_text(text: str, task: Task) -> dict[str, str] | None:
    """``"cls=focal; box=giou"`` -> ``{"cls": "focal", "box": "giou"}`` when every part names a
    slot of ``task``; ``None`` when the text is not of that form (formulas never contain ``=``)."""
    if "=" not in text or text.split("=")[0].strip() not in {s.name for s in task.loss_slots()}:
        return None
    out: dict[str, str] = {}
    names = {s.name for s in task.loss_slots()}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise ValueError(f"{part.strip()!r}: expected slot=loss with a slot of task "
                             f"{task.name!r} ({', '.join(sorted(names))})")
        out[name] = value.strip()
    return out


def slot_assignments(items: list[str], what: str = "slot=loss") -> dict[str, str]:
    """``["cls=focal", "box=giou"]`` -> ``{"cls": "focal", "box": "giou"}``; ``ValueError`` naming
    ``what`` for an item that is not ``SLOT=LOSS``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what} takes SLOT=LOSS (e.g. cls=focal), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def spec_kinds(spec) -> tuple[str, ...]:
    """Every loss kind ``spec`` can be used for: a zoo name's kinds (``mse``: classification and
    regression), else the one of :func:`spec_kind` (``()`` when it cannot tell)."""
    from lossforge import zoo

    if isinstance(spec, str) and spec.strip() in zoo.names():
        return zoo.kinds(spec.strip())
    kind = spec_kind(spec)
    return () if kind is None else (kind,)


def spec_kind(spec) -> str | None:
    """The loss kind a spec is written for (``None`` when it cannot tell: a .py file, a module
    without a ``kind`` attribute, a formula of no known kind); a zoo name with several forms
    (``mse``) gives its first (see :func:`spec_kinds`)."""
    from lossforge import zoo
    from lossforge.expr.interpret import loss_kind

    if isinstance(spec, nn.Module):
        return getattr(spec, "kind", None)
    try:
        if isinstance(spec, Expr):
            return loss_kind(spec)
        if isinstance(spec, str):
            if spec.strip() in zoo.names():
                return zoo.kinds(spec.strip())[0]
            if spec.strip().endswith(".py"):
                return None
            return loss_kind(parse(spec))
    except (ValueError, ParseError):
        return None
    return None


def resolve_slots(spec, task: Task) -> dict[str, object]:
    """What ``spec`` gives each slot of ``task`` (slots it does not name keep ``slot.default``).

    ``spec``: a ``dict`` slot -> spec; a text ``"slot=spec; slot=spec"``; or one spec, which goes
    to the only slot of its kind (``ValueError`` when that is ambiguous: name the slot).
    """
    slots = task.loss_slots()
    names = [s.name for s in slots]
    if isinstance(spec, str):
        spec = _slot_text(spec, task) or spec
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ValueError(f"task {task.name!r} has no loss slot {', '.join(map(repr, unknown))}; "
                             f"its slots are: {', '.join(names)}")
        given = dict(spec)
    elif len(slots) == 1:
        given = {names[0]: spec}
    else:
        kinds = spec_kinds(spec)
        match = [s.name for s in slots if s.kind in kinds]
        if len(match) != 1:
            raise ValueError(
                f"task {task.name!r} has loss slots {', '.join(f'{s.name} ({s.kind})' for s in slots)}: "
                f"cannot tell which one loss {_label(spec)!r} applies to; pass a dict "
                "{slot: loss} or 'slot=loss' (e.g. '" + f"{slots[-1].name}={_label(spec)}')")
        given = {match[0]: spec}
    return {s.name: given.get(s.name, s.default) for s in slots}


def _label(spec) -> str:
    return spec if isinstance(spec, str) else str(spec) if isinstance(spec, Expr) else \
        getattr(spec, "formula", type(spec).__name__)


def load_losses(spec, task: Task) -> LoadedLoss:
    """The whole training loss of ``task`` from ``spec`` (see :func:`resolve_slots`).

    Single-slot tasks: the slot's loss itself. Multi-slot tasks: a composite whose ``name`` reads
    ``"cls=focal; box=giou"`` (slot order) and whose ``module`` is a :class:`SlotLosses`.
    """
    specs = resolve_slots(spec, task)
    slots = task.loss_slots()
    if len(slots) == 1:
        return _load_one(specs[slots[0].name], task, slots[0])
    parts = {s.name: _load_one(specs[s.name], task, s) for s in slots}
    name = "; ".join(f"{n}={p.name}" for n, p in parts.items())
    return LoadedLoss(name, SlotLosses(task, {n: p.module for n, p in parts.items()}), None, parts)


def load_source_file(path: str | Path) -> nn.Module:
    """Import a ``.py`` file (as written by ``to_source``) and instantiate its ``nn.Module`` class."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"loss file {str(path)!r} does not exist")
    name = f"_lossforge_user_loss_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file: report any failure as bad input
        raise ValueError(f"could not import loss file {str(path)!r}: {err}") from err
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, nn.Module) and c.__module__ == name]
    if len(classes) != 1:
        raise ValueError(f"loss file {str(path)!r} must define exactly one nn.Module class, "
                         f"found {len(classes)}")
    return classes[0]()
