"""Which task a study was made with, and when a study may load it again.

``LossSearch(task=...)`` takes a :class:`~lossforge.tasks.Task`, a built-in name, or a
spec ``path/to/file.py[:ATTR]`` / ``package.module:ATTR`` (:func:`~lossforge.tasks.spec.load_task`).
The settings record ``task`` (its name), ``task_spec`` (the canonical spec: a file path made
absolute), ``task_fingerprint`` (sha256 of the task file's bytes as loaded; ``None`` for a built-in
task), ``task_options`` (the options the task was made with, :mod:`lossforge.tasks.options`:
re-applied when the study's task is loaded again, and a setting a continued study must match)
and ``num_classes`` (so that readers need not load the task). A study file is data, never
code: readers (``show``, ``report``, ``export``) import nothing it names, and :func:`study_task`
loads a task a study names only when it is built in or when the caller names it again
(``task=``, CLI ``--task``). Continuing a study whose task file changed since it was created is
refused (:class:`StudyTaskChangedError`) unless ``allow_changed_task=True``
(``--allow-changed-task``); the study then records the new fingerprint and keeps the old ones in
its ``"task_changes"`` meta entry.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lossforge.storage import StudyFileError
from lossforge.tasks import Task
from lossforge.tasks.spec import is_spec, load_task, loaded_source, spec_fingerprint, spec_of


class StudyTaskChangedError(StudyFileError):
    """The study's task file changed since the study was created (``allow_changed_task=True``,
    CLI ``--allow-changed-task``, continues anyway)."""


def task_identity(task: Task) -> dict[str, Any]:
    """What a study records of where ``task`` came from: ``{"task_spec", "task_fingerprint"}``
    for a task loaded by :func:`~lossforge.tasks.spec.load_task` (the fingerprint is the sha256 of
    the file's bytes as imported in this process; ``None`` for a built-in name), ``{}`` for a task
    object made otherwise (nothing known)."""
    spec = spec_of(task)
    if spec is None:
        return {}
    if not is_spec(spec):
        return {"task_spec": spec, "task_fingerprint": None}
    source = loaded_source(spec)
    if source is not None:
        fingerprint = hashlib.sha256(source).hexdigest()
    else:  # package.module:ATTR: the module's source file
        fingerprint = spec_fingerprint(spec)
    return {"task_spec": spec, "task_fingerprint": fingerprint}


def stored_task_spec(settings: dict[str, Any]) -> str:
    """The spec a study's task was loaded from (study files without ``task_spec``: its name)."""
    return settings.get("task_spec") or settings["task"]


def task_file_status(settings: dict[str, Any], task: Task | str,
                     path: str | Path = "the study") -> dict[str, Any]:
    """Whether ``task`` (a spec or task the caller names; loaded, so its file is imported) is the
    study's and its file unchanged: ``{"task_spec", "task_fingerprint", "unchanged"}``
    (``unchanged`` is ``None`` when there is nothing to compare). :class:`StudyFileError` when it
    is another task (name)."""
    task = load_task(task)
    if task.name != settings["task"]:
        raise StudyFileError(f"{path} was created for task {settings['task']!r}, not "
                             f"{task.name!r}; name the study's task: {stored_task_spec(settings)}")
    identity = task_identity(task)
    old, new = settings.get("task_fingerprint"), identity.get("task_fingerprint")
    return {"task_spec": identity.get("task_spec"), "task_fingerprint": new,
            "unchanged": None if old is None or new is None else old == new}


def check_task_unchanged(settings: dict[str, Any], identity: dict[str, Any]) -> None:
    """:class:`StudyTaskChangedError` when the study's task file (``settings``) and the one loaded
    now (``identity``, :func:`task_identity`) have different fingerprints (nothing to compare:
    no error)."""
    old, new = settings.get("task_fingerprint"), identity.get("task_fingerprint")
    if old is None or new is None or old == new:
        return
    spec = identity.get("task_spec") or stored_task_spec(settings)
    target = spec.rsplit(":", 1)[0] if ".py:" in spec else spec
    where = f"task file {target}" if target.endswith(".py") else f"the source of task {spec}"
    raise StudyTaskChangedError(
        f"{where} changed since the study was created (sha256 {old[:12]}… -> "
        f"{new[:12]}…); restore it, or pass --allow-changed-task (allow_changed_task=True) to "
        "continue with the changed task (results from before and after may not be comparable)")


def moved_or_changed(settings: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
    """The settings entries to update when the task now comes from another path or other bytes
    (an accepted change): the new spec and fingerprint."""
    if not identity or identity.get("task_spec") is None or "task_spec" not in settings:
        return {}
    return {k: v for k, v in identity.items() if settings.get(k) != v}


def study_task(settings: dict[str, Any], task: Task | str | None = None, *,
               path: str | Path = "the study", allow_changed_task: bool = False,
               verb: str = "resume") -> Task:
    """The task to continue (or retrain) a study with ``settings``, by the rule "a study file is
    data, never code": a built-in task is loaded by its stored name; a task file or module is
    imported only when the caller names it again (``task``: a spec or a task object; CLI
    ``--task``). ``task`` must have the study's task name, and a task file whose fingerprint
    changed is refused unless ``allow_changed_task`` (:class:`StudyTaskChangedError`).

    ``verb`` names the command in the messages (``resume``, ``refine``). Raises
    :class:`~lossforge.storage.StudyFileError` (a ``ValueError``) or
    :class:`~lossforge.tasks.spec.TaskSpecError`."""
    stored = stored_task_spec(settings)
    if task is None:
        if is_spec(stored):
            raise StudyFileError(
                f"{path} was made with the task {stored}; a study file does not import the code it "
                f"names: name it again to {verb}: `lossforge {verb} {path} --task {stored}` "
                f"(Python: task={stored!r})")
        task = stored
    task = load_task(task, **settings.get("task_options", {})) if isinstance(task, str) else task
    if task.name != settings["task"]:
        raise StudyFileError(f"{path} was created for task {settings['task']!r}, not "
                             f"{task.name!r} (from {spec_of(task) or 'the task object given'}); "
                             f"name the study's task: {stored}")
    if not allow_changed_task:
        check_task_unchanged(settings, task_identity(task))
    return task
