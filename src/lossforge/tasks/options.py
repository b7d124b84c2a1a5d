"""Task options: the constructor keywords of a task (``tasks.get("digits-noisy", noise=0.4)``,
CLI ``--task-option noise=0.4``), described, checked, typed and recorded.

Contract.

* A task's options are the keyword parameters of its factory (a ``Task`` subclass's ``__init__``,
  or a function returning a task): :func:`option_specs` describes each one as a
  :class:`TaskOption` — name, type (from the annotation: ``int``, ``float``, ``str``, ``bool``,
  ``typing.Literal[...]`` choices, each optionally ``| None``), default and help text (the
  factory's ``option_help`` mapping, when it has one).
* :func:`check_options` is what :func:`lossforge.tasks.get` and
  :func:`lossforge.tasks.spec.load_task` run before calling a factory: an unknown option name is a
  :class:`TaskOptionError` (a ``ValueError``) listing the valid ones (with a did-you-mean); a text
  value (as the command line gives it) is converted to the option's type; a value of the wrong
  type or outside the choices is an error naming the option, the expected type and the value.
  A factory that takes ``**kwargs`` accepts any further name unchecked.
* What a task was made with is recorded on it (:func:`record_options`; :func:`task_options` reads
  it back): every option, defaults included, whenever options were given or the task records its
  own (the task families of issue 17 always do, so their noise seed and rate are part of a study's
  settings). A study stores this dict as its ``task_options`` setting and re-creates the task with
  it on resume; a task made without options records ``{}``.

Values are JSON-serialisable (``int``, ``float``, ``str``, ``bool``, ``None``).
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from lossforge._hints import did_you_mean

_RECORD_ATTR = "_lossforge_options"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class TaskOptionError(ValueError):
    """An option a task does not take, or a value that does not fit the option."""


@dataclass(frozen=True)
class TaskOption:
    """One option of a task: ``type`` is ``int``, ``float``, ``str``, ``bool`` or ``None`` (not
    annotated: any value); ``choices`` the allowed values of a ``Literal`` option; ``optional``
    whether ``None`` is allowed."""

    name: str
    type: type | None
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    @property
    def type_name(self) -> str:
        """``"float"``, ``"symmetric|pair"``, ``"str or none"`` …: what the value must be."""
        base = ("|".join(str(c) for c in self.choices) if self.choices
                else self.type.__name__ if self.type is not None else "any")
        return f"{base} or none" if self.optional else base

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_name, "default": self.default,
                "help": self.help}

    def convert(self, value: Any, task: str) -> Any:
        """``value`` as this option's type; :class:`TaskOptionError` naming the option if it does
        not fit. Text (the command line's) is parsed: ``none`` for an optional option, ``true``/
        ``false`` (also ``1``/``0``, ``yes``/``no``) for a flag, numbers for numbers."""
        if value is None or (self.optional and isinstance(value, str)
                             and value.strip().lower() in ("none", "null")):
            if self.optional or self.type is None:
                return None
            raise self._bad(value, task)
        out = self._typed(value, task)
        if self.choices is not None and out not in self.choices:
            raise TaskOptionError(f"task {task!r}: option {self.name} must be one of "
                                  f"{', '.join(map(str, self.choices))}, got {value!r}"
                                  f"{did_you_mean(value, map(str, self.choices))}")
        return out

    def _typed(self, value: Any, task: str) -> Any:
        kind = self.type
        if kind is None:
            return value
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise self._bad(value, task)
        if kind in (int, float):
            if isinstance(value, bool):
                raise self._bad(value, task)
            if isinstance(value, (int, float)) and not isinstance(value, str):
                if kind is int and float(value) != int(value):
                    raise self._bad(value, task)
                return kind(value)
            try:
                return kind(str(value).strip())
            except ValueError:
                if kind is int:
                    try:
                        number = float(str(value))
                    except ValueError:
                        raise self._bad(value, task) from None
                    if number.is_integer():
                        return int(number)
                raise self._bad(value, task) from None
        if kind is str:
            if isinstance(value, str):
                return value
            raise self._bad(value, task)
        return value

    def _bad(self, value: Any, task: str) -> TaskOptionError:
        return TaskOptionError(f"task {task!r}: option {self.name} takes {self.type_name}, got "
                               f"{value!r}")


def _callable_of(factory: Callable) -> Callable:
    return factory.__init__ if isinstance(factory, type) else factory


def _annotation(factory: Callable, name: str, raw: Any) -> Any:
    try:
        hints = typing.get_type_hints(_callable_of(factory))
    except Exception:  # unresolvable annotations: treat as not annotated
        return inspect.Parameter.empty
    return hints.get(name, raw)


def _describe_type(annotation: Any) -> tuple[type | None, tuple[Any, ...] | None, bool]:
    """``(type, choices, optional)`` of an annotation; ``(None, None, True)`` for anything else."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None, None, True
    args = typing.get_args(annotation)
    optional = False
    if args and type(None) in args and typing.get_origin(annotation) is not Literal:
        rest = [a for a in args if a is not type(None)]
        optional = True
        if len(rest) != 1:
            return None, None, True
        annotation, args = rest[0], typing.get_args(rest[0])
    if typing.get_origin(annotation) is Literal:
        kinds = {type(a) for a in args}
        return (kinds.pop() if len(kinds) == 1 else None), tuple(args), optional
    if annotation in (int, float, str, bool):
        return annotation, None, optional
    return None, None, True


def option_specs(factory: Callable) -> dict[str, TaskOption]:
    """The options ``factory`` takes (its keyword parameters, in order), described."""
    try:
        params = inspect.signature(_callable_of(factory)).parameters
    except (TypeError, ValueError):
        return {}
    helps: Mapping[str, str] = getattr(factory, "option_help", None) or {}
    out: dict[str, TaskOption] = {}
    for i, (name, p) in enumerate(params.items()):
        if isinstance(factory, type) and i == 0:  # self
            continue
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        kind, choices, optional = _describe_type(_annotation(factory, name, p.annotation))
        default = None if p.default is p.empty else p.default
        if kind is None and choices is None and type(default) in (int, float, str, bool):
            kind, optional = type(default), False  # not annotated: typed like its default
        out[name] = TaskOption(name, kind, default, str(helps.get(name, "")), choices, optional)
    return out


def _takes_any_keyword(factory: Callable) -> bool:
    try:
        params = inspect.signature(_callable_of(factory)).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind == p.VAR_KEYWORD for p in params)


def check_options(factory: Callable, options: Mapping[str, Any], task: str,
                  strict: bool = True) -> dict[str, Any]:
    """``options`` checked against ``factory``'s (:func:`option_specs`) and converted to their
    types; :class:`TaskOptionError` naming the task, the option and the valid names otherwise.
    ``strict=False`` passes unknown names through unchanged (the factory's own error then says
    what is wrong: a user's task file, whose traceback :func:`~lossforge.tasks.spec.load_task`
    shows)."""
    specs = option_specs(factory)
    open_ended = _takes_any_keyword(factory) or not strict
    out: dict[str, Any] = {}
    for name, value in options.items():
        spec = specs.get(name)
        if spec is None:
            if open_ended:
                out[name] = value
                continue
            valid = ", ".join(specs) or "none"
            raise TaskOptionError(f"task {task!r} has no option {name!r}"
                                  f"{did_you_mean(name, specs)}; its options are: {valid} "
                                  "(`lossforge tasks` lists them with their types and defaults)")
        out[name] = spec.convert(value, task)
    return out


def resolved_options(factory: Callable, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``factory`` with its value: ``options`` over the defaults."""
    return {**{n: s.default for n, s in option_specs(factory).items()}, **options}


def parse_option_pairs(pairs: list[str], what: str = "--task-option") -> dict[str, str]:
    """``["noise=0.4", "flip=pair"]`` -> ``{"noise": "0.4", "flip": "pair"}`` (text values, typed
    later by :func:`check_options`); ``ValueError`` naming ``what`` for an item that is not
    ``KEY=VALUE`` or a key given twice."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TaskOptionError(f"{what} {pair!r}: expected KEY=VALUE, e.g. noise=0.4")
        if key in out:
            raise TaskOptionError(f"{what}: option {key!r} is given twice")
        out[key] = value.strip()
    return out


def record_options(task: Any, options: Mapping[str, Any]) -> Any:
    """Record on ``task`` the options it was made with (see :func:`task_options`); ``task``."""
    try:
        setattr(task, _RECORD_ATTR, dict(options))
    except AttributeError:  # __slots__ without room for it
        pass
    return task


def task_options(task: Any) -> dict[str, Any]:
    """The options ``task`` was made with, as recorded (``{}`` when none were)."""
    return dict(getattr(task, _RECORD_ATTR, None) or {})


__all__ = ["TaskOption", "TaskOptionError", "check_options", "option_specs", "parse_option_pairs",
           "record_options", "resolved_options", "task_options"]
