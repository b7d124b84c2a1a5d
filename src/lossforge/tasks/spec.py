"""Task specs: a task named by a string, as on the command line (``--task SPEC``).

Contract. :func:`load_task` turns a *spec* into a :class:`~lossforge.tasks.Task`:

* a registered name (``digits``; anything :func:`is_spec` says is not a spec) — delegated to
  :func:`lossforge.tasks.get`;
* ``path/to/file.py:ATTR`` or ``path/to/file.py`` — a Python file, imported as described below;
* ``package.module:ATTR`` — a module importable on ``sys.path`` (``sys.path`` is not changed).

The part before the last ``:`` that is not followed by ``/`` or ``\\`` (so ``C:\\x\\t.py:T`` splits
after ``t.py``) is a file path when it ends in ``.py`` or contains ``/`` or ``\\``, else a module
name. ``ATTR`` (dotted attributes allowed) may be a ``Task`` subclass (called with ``options``),
a ``Task`` instance (no ``options`` allowed) or a callable returning a ``Task`` (called with
``options``). Without ``ATTR`` (``file.py``, ``package.module:``) the module must *define* exactly
one ``Task`` subclass (its ``__module__`` is the module; a class imported into it does not count).
Duck-typed tasks are refused: a task must be an instance of ``Task``.

Importing a file. A file is imported under a module name derived from its resolved path,
:func:`module_name_for` (``_lossforge_task_<stem>_<12 hex digits of sha256(path)>``), and cached
in ``sys.modules``: loading the same file twice in one process (by a relative or an absolute path)
gives the same module, hence the same classes, even if the file changed in between
(:func:`spec_fingerprint` tells). The name is the same in every process, so a task pickled by the
study unpickles in a worker that first ran :func:`import_task_module` on the same spec (given
:func:`loaded_source` as ``source=`` where the file may be missing or differ). The file's
directory is put at the front of ``sys.path`` (as ``python file.py`` does), so the file may import
its sibling modules; it is not imported as part of a package (no relative imports). A failed import
leaves nothing in ``sys.modules``: a corrected file loads on the next try.

Errors are :class:`TaskSpecError` (a ``ValueError``) whose message says what went wrong and what to
do: a file that does not exist (its resolved path), a module that cannot be found, an exception
raised while importing the user's code (its file, line and source line), a missing ``ATTR`` (the
module's Task subclasses, task instances and functions, with a did-you-mean), zero or several Task
subclasses without ``ATTR``, an object that is not a task, a callable that raises or returns
something else. The original exception is chained (``__cause__``).

What a study records. :func:`canonical_spec` (file paths made absolute, resolved) and
:func:`spec_fingerprint` (sha256 of the file's bytes; for ``package.module:ATTR`` of the module's
source file; ``None`` for registered names) — ``resume`` re-loads the canonical spec and refuses a
file whose fingerprint changed. Only that one file is fingerprinted, not the modules it imports.
:func:`spec_of` gives the canonical spec a task was loaded from. A task keeps the ``name`` its class
sets; one whose class sets none (it would be ``Task``'s ``"task"``) is named after its class.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from lossforge import tasks as registry
from lossforge._hints import did_you_mean
from lossforge.tasks.base import Task

#: Splits ``TARGET:ATTR`` at a ``:`` that is not followed by a path separator (``C:\\``).
_SEP = re.compile(r":(?![\\/])")
_MODULE_PREFIX = "_lossforge_task_"
_IMPORT_LOCK = threading.RLock()
_SPEC_ATTR = "_lossforge_spec"
#: Module name -> the bytes executed for it (task files imported in this process).
_SOURCES: dict[str, bytes] = {}
_REQUIRED = "a Task subclass, a Task instance or a callable returning a Task"


class TaskSpecError(ValueError):
    """A task spec that cannot be loaded; the message says what went wrong and how to fix it.

    ``spec``: the spec as given."""

    def __init__(self, message: str, spec: str | None = None):
        super().__init__(message)
        self.spec = spec


# --- parsing --------------------------------------------------------------------------------------
def is_spec(text: str) -> bool:
    """Whether ``text`` names a file or module (contains ``:`` or ends in ``.py``) rather than a
    registered task."""
    return ":" in text or text.endswith(".py")


def _split(text: str) -> tuple[str, str | None, bool]:
    """``text`` -> ``(target, attr or None, target is a file path)``."""
    last = None
    for last in _SEP.finditer(text):
        pass
    target, attr = (text, None) if last is None else (text[:last.start()], text[last.end():] or None)
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    return target, attr, is_file


def _parse(text: str) -> tuple[str, str | None, bool]:
    target, attr, is_file = _split(text)
    if not target:
        raise TaskSpecError(f"task spec {text!r} names no file or module before ':'; write "
                            "path/to/file.py:ATTR or package.module:ATTR", text)
    if attr is not None and not all(p.isidentifier() for p in attr.split(".")):
        raise TaskSpecError(f"task spec {text!r}: {attr!r} after ':' is not a Python name; write "
                            "path/to/file.py:ATTR with ATTR the name of a Task subclass, a task "
                            "or a function in the file", text)
    if not is_file and not all(p.isidentifier() for p in target.split(".")):
        raise TaskSpecError(f"task spec {text!r}: {target!r} is neither a .py file nor a module "
                            "name (package.module); write path/to/file.py:ATTR or "
                            "package.module:ATTR", text)
    return target, attr, is_file


def _file_path(target: str) -> Path:
    return Path(os.path.expanduser(target)).resolve()


def canonical_spec(spec: str) -> str:
    """The spec a study records: a file path made absolute (and resolved), ``:ATTR`` kept; module
    specs and registered names unchanged. Idempotent; the file need not exist."""
    if not is_spec(spec):
        return spec
    target, attr, is_file = _split(spec)
    if not is_file:
        return spec
    path = str(_file_path(target))
    return f"{path}:{attr}" if attr else path


def module_name_for(path: str | Path) -> str:
    """The ``sys.modules`` name a task file is imported under (the same in every process)."""
    resolved = Path(path).resolve()
    stem = re.sub(r"\W", "_", resolved.stem)
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return f"{_MODULE_PREFIX}{stem}_{digest}"


# --- fingerprint ----------------------------------------------------------------------------------
def spec_fingerprint(spec: str) -> str | None:
    """Hex sha256 of the spec's source file: the task file, or the module's file for
    ``package.module:ATTR`` (``None`` for a registered name, or a module without a source file).

    Raises :class:`TaskSpecError` when the file or module is not there."""
    if not is_spec(spec):
        return None
    target, _, is_file = _parse(spec)
    if is_file:
        source = _existing_file(target, spec)
    else:
        try:
            found = importlib.util.find_spec(target)
        except (ImportError, ValueError):  # a parent package that is missing or fails
            found = None
        if found is None:
            raise TaskSpecError(_module_missing(target, spec), spec)
        if not found.origin or not found.has_location:
            return None
        source = Path(found.origin)
    return hashlib.sha256(source.read_bytes()).hexdigest()


# --- importing ------------------------------------------------------------------------------------
def import_task_module(spec: str, source: bytes | None = None) -> ModuleType:
    """The module a file or module spec names, imported (once per process) as described in the
    module docstring. A worker calls this before unpickling a task loaded from ``spec``.

    ``source``: for a file spec, the bytes the study imported (:func:`loaded_source`), for a worker
    on another machine: when the file at that path is missing or differs, these bytes are executed
    under the same module name instead, so the same classes unpickle (the file's folder is then not
    put on ``sys.path``: sibling modules must be importable there by other means)."""
    target, _, is_file = _parse(spec)
    if not is_file:
        return _import_module(target, spec)
    return _import_file(target, spec, source)


def loaded_source(spec: str) -> bytes | None:
    """The bytes of a file spec's file as imported in this process (``None``: not imported here,
    or not a file spec) — what a worker without the file needs (``import_task_module(source=)``)."""
    if not is_spec(spec):
        return None
    target, _, is_file = _split(spec)
    return _SOURCES.get(module_name_for(_file_path(target))) if is_file else None


def _existing_file(target: str, spec: str) -> Path:
    path = _file_path(target)
    if path.is_file():
        if path.suffix != ".py":
            raise TaskSpecError(f"task file {path} is not a Python file: name a .py file", spec)
        return path
    if path.is_dir():
        raise TaskSpecError(f"task file {path} is a directory: name the .py file in it that "
                            "defines the task (path/to/file.py:ATTR)", spec)
    if path.suffix != ".py" and path.with_suffix(".py").is_file():
        raise TaskSpecError(f"task file {path} not found; did you mean {path.with_suffix('.py')}?",
                            spec)
    hint = ""
    if path.parent.is_dir():
        hint = did_you_mean(path.name, [p.name for p in path.parent.glob("*.py")])
    where = f" (relative paths start at the current directory {Path.cwd()})" \
        if not Path(os.path.expanduser(target)).is_absolute() else ""
    raise TaskSpecError(f"task file not found: {path}{hint}{where}", spec)


def _import_file(target: str, spec: str, source: bytes | None = None) -> ModuleType:
    path = _file_path(target)
    name = module_name_for(path)
    with _IMPORT_LOCK:
        module = sys.modules.get(name)
        if module is not None:
            return module
        if source is not None and path.is_file() and path.read_bytes() == source:
            source = None  # the same file is here: import it as usual
        if source is None:
            path = _existing_file(target, spec)
            source = path.read_bytes()
            folder = str(path.parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
        sys.modules[name] = module
        try:
            exec(compile(source, str(path), "exec", dont_inherit=True), vars(module))
        except BaseException as err:
            sys.modules.pop(name, None)
            if isinstance(err, (Exception, SystemExit)):
                raise TaskSpecError(_failed_import(f"importing task file {path}", err), spec) from err
            raise
        _SOURCES[name] = source
        return module


def _import_module(target: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        if err.name and (target == err.name or target.startswith(err.name + ".")):
            raise TaskSpecError(_module_missing(target, spec), spec) from err
        raise TaskSpecError(_failed_import(f"importing module {target!r}", err), spec) from err
    except (Exception, SystemExit) as err:
        raise TaskSpecError(_failed_import(f"importing module {target!r}", err), spec) from err


def _module_missing(target: str, spec: str) -> str:
    msg = f"cannot find module {target!r} (task spec {spec!r}) on this Python's path"
    as_file = Path(*target.split(".")).with_suffix(".py")
    if as_file.is_file():
        attr = _split(spec)[1]
        as_spec = f"{as_file}:{attr}" if attr else str(as_file)
        return msg + f"; a file {as_file} is here: name it as a file, '{as_spec}'"
    return msg + (f"; install the package that provides it into {sys.executable}, or name a file: "
                  "path/to/file.py:ATTR")


# --- error messages -------------------------------------------------------------------------------
_MACHINERY = (__file__, importlib.__file__)


def _user_frames(err: BaseException) -> list[traceback.FrameSummary]:
    """The traceback without lossforge's loader and importlib's frames (those come first)."""
    frames = list(traceback.extract_tb(err.__traceback__))
    while frames and (frames[0].filename in _MACHINERY or frames[0].filename.startswith("<frozen")):
        frames.pop(0)
    return [f for f in frames if not f.filename.startswith("<frozen")]


def _where(frame: traceback.FrameSummary) -> str:
    line = f": `{frame.line.strip()}`" if frame.line else ""
    return f"{Path(frame.filename).name} line {frame.lineno}{line}"


def _failed_import(what: str, err: BaseException) -> str:
    """``what`` failed: where in the user's code, which exception, and what to do."""
    if isinstance(err, SyntaxError) and err.filename:
        text = f": `{err.text.strip()}`" if err.text else ""
        return (f"{what} failed: {Path(err.filename).name} line {err.lineno}: SyntaxError: "
                f"{err.msg}{text}; fix the syntax and run again")
    frames = _user_frames(err)
    if isinstance(err, SystemExit):
        at = f" at {_where(frames[-1])}" if frames else ""
        return (f"{what} failed: it called exit({err.code!r}){at}; a task file must not run a "
                "program when imported: put that code under `if __name__ == \"__main__\":`")
    msg = f"{what} failed: " + _raised(frames, err)
    if isinstance(err, ModuleNotFoundError) and err.name:
        msg += (f"; is the package that provides {err.name!r} installed in this Python "
                f"({sys.executable})?")
    return msg


def _raised(frames: list[traceback.FrameSummary], err: BaseException) -> str:
    """"``file.py line N: `source` raised Type: message``" plus the innermost place if deeper."""
    exc = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if not frames:
        return exc
    msg = f"{_where(frames[0])} raised {exc}"
    if len(frames) > 1:
        msg += f" (in {_where(frames[-1])})"
    return msg


def _describe(obj: Any) -> str:
    kind = type(obj)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = repr(obj)
    text = text if len(text) <= 60 else text[:57] + "..."
    article = "an" if name[0].lower() in "aeiou" else "a"
    return f"{article} {name} ({text})"


# --- finding ATTR ---------------------------------------------------------------------------------
def _is_task_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Task) and obj is not Task


def _contents(module: ModuleType) -> dict[str, list[str]]:
    """The module's public Task subclasses, task instances and functions defined in it."""
    found: dict[str, list[str]] = {"Task subclasses": [], "task instances": [], "functions": []}
    for key, value in vars(module).items():
        if key.startswith("_"):
            continue
        if _is_task_class(value):
            found["Task subclasses"].append(key)
        elif isinstance(value, Task):
            found["task instances"].append(key)
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            found["functions"].append(key)
    return found


def _listing(module: ModuleType) -> str:
    parts = [f"{kind}: {', '.join(names)}" for kind, names in _contents(module).items() if names]
    return "; it has " + "; ".join(parts) if parts else \
        "; it has no Task subclass, task instance or function"


def _lookup(module: ModuleType, attr: str, place: str, spec: str) -> Any:
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            if i == 0:
                names = [k for k in vars(module) if not k.startswith("__")]
                raise TaskSpecError(f"{place} has no {part!r}{did_you_mean(part, names)}"
                                    f"{_listing(module)}", spec) from None
            done = ".".join(attr.split(".")[:i])
            raise TaskSpecError(f"{place}: {done} has no attribute {part!r}", spec) from None
    return obj


def _discover(module: ModuleType, place: str, target: str, spec: str) -> type:
    defined = [v for k, v in vars(module).items()
               if _is_task_class(v) and v.__module__ == module.__name__ and not k.startswith("_")]
    if len(defined) == 1:
        return defined[0]
    if not defined:
        raise TaskSpecError(f"{place} defines no Task subclass (classes imported into it do not "
                            f"count){_listing(module)}; name the one to load: '{target}:ATTR', or "
                            "define a subclass of lossforge.tasks.Task in the file", spec)
    names = ", ".join(c.__name__ for c in defined)
    raise TaskSpecError(f"{place} defines {len(defined)} Task subclasses ({names}); name the one to "
                        f"load: '{target}:{defined[0].__name__}'", spec)


# --- making the task ------------------------------------------------------------------------------
def _call(factory: Any, options: dict[str, Any], label: str, spec: str) -> Any:
    try:
        return factory(**options)
    except Exception as err:
        raise TaskSpecError(f"{label} failed: " + _raised(_user_frames(err), err), spec) from err


def _make(obj: Any, options: dict[str, Any], attr: str, place: str, spec: str) -> Task:
    """``obj`` (``attr`` in ``place``) as a task: instantiated, called or taken as it is."""
    if isinstance(obj, Task):
        if options:
            raise TaskSpecError(f"{attr!r} in {place} is a task instance: it takes no options "
                                f"({', '.join(options)}); name its class or a function that "
                                "builds it instead", spec)
        return obj
    if isinstance(obj, type):
        if not issubclass(obj, Task):
            raise TaskSpecError(f"{attr!r} in {place} is the class {obj.__qualname__}, which does "
                                f"not subclass lossforge.tasks.Task; a task spec must name "
                                f"{_REQUIRED}", spec)
        return _call(obj, options, f"creating {attr}() from {place}", spec)
    if callable(obj):
        task = _call(obj, options, f"calling {attr}() from {place}", spec)
        if not isinstance(task, Task):
            raise TaskSpecError(f"{attr}() in {place} returned {_describe(task)}, not a task: it "
                                "must return an instance of a lossforge.tasks.Task subclass", spec)
        return task
    raise TaskSpecError(f"{attr!r} in {place} is {_describe(obj)}, not a task: a task spec must "
                        f"name {_REQUIRED}", spec)


def _named(task: Task) -> Task:
    """Name a task whose class sets no ``name`` after its class."""
    sets_name = any("name" in vars(c) for c in type(task).__mro__ if c not in (Task, object))
    if not sets_name and "name" not in getattr(task, "__dict__", {}):
        try:
            task.name = type(task).__name__
        except AttributeError:
            pass
    return task


def _record(task: Task, spec: str) -> Task:
    try:
        setattr(task, _SPEC_ATTR, spec)
    except AttributeError:  # __slots__ without room for it
        pass
    return task


def spec_of(task: Task) -> str | None:
    """The canonical spec ``task`` was loaded from by :func:`load_task` (``None`` otherwise)."""
    return getattr(task, _SPEC_ATTR, None)


def load_task(spec: str | Task, **options: Any) -> Task:
    """The task ``spec`` names (see the module docstring); ``options`` go to its constructor or
    factory, checked and typed first and recorded on the task
    (:mod:`lossforge.tasks.options`; a bad one raises ``TaskOptionError``). A ``Task`` object is
    returned unchanged. Raises :class:`TaskSpecError`."""
    if isinstance(spec, Task):
        return spec
    if not isinstance(spec, str):
        raise TaskSpecError(f"a task spec must be a task name, 'path/to/file.py:ATTR', "
                            f"'package.module:ATTR' or a Task, got {_describe(spec)}")
    if not is_spec(spec):
        known = registry.names()
        if spec not in known:
            raise TaskSpecError(f"unknown task {spec!r}{did_you_mean(spec, known)}; known tasks: "
                                f"{', '.join(known)}; or name your own: path/to/file.py:ATTR or "
                                "package.module:ATTR", spec)
        return _record(registry.get(spec, **options), spec)
    target, attr, is_file = _parse(spec)
    module = import_task_module(spec)
    place = f"task file {_file_path(target)}" if is_file else f"module {target!r}"
    if attr is None:
        obj = _discover(module, place, target, spec)
        attr = obj.__name__
    else:
        obj = _lookup(module, attr, place, spec)
    if options and not isinstance(obj, Task):  # typed and checked: a clear error for a bad name
        from lossforge.tasks.options import check_options, record_options, resolved_options

        options = check_options(obj, options, attr, strict=False)  # typed; the rest: its error
        task = record_options(_make(obj, options, attr, place, spec),
                              resolved_options(obj, options))
    else:
        task = _make(obj, options, attr, place, spec)
    return _record(_named(task), canonical_spec(spec))


__all__ = ["TaskSpecError", "canonical_spec", "import_task_module", "is_spec", "load_task",
           "loaded_source", "module_name_for", "spec_fingerprint", "spec_of"]
