"""Help texts of the task options the verbs share (``--task``, ``--task-option``,
``--allow-changed-task``) and :func:`load_task_with_options`: a leaf with no commands, so that
importing it registers nothing on the app."""
from __future__ import annotations

from typing import Sequence

#: ``--task`` wherever a verb loads a task (search, evaluate).
TASK_HELP = ("Task: a built-in name (see `lossforge tasks`), path/to/file.py[:ATTR] or "
             "package.module:ATTR (ATTR: a Task subclass, a task, or a function returning one; "
             "optional when the file defines one Task subclass).")
#: ``--task`` on the verbs that work on a study file.
STUDY_TASK_HELP = ("The study's task named again, when it is your own: path/to/file.py[:ATTR] or "
                   "package.module:ATTR (a study file never imports the code it names; built-in "
                   "tasks need no --task).")
#: ``--task-option`` wherever a verb loads a task (search, evaluate).
TASK_OPTION_HELP = ("KEY=VALUE setting of the task (repeatable), e.g. noise=0.4 flip=pair for "
                    "digits-noisy; typed by the task's constructor; `lossforge tasks` lists each "
                    "task's options. A search stores them with the study's settings.")
#: ``--allow-changed-task`` (search on an existing study, resume, refine).
ALLOW_CHANGED_HELP = "Continue even though the task file changed since the study was created."



def load_task_with_options(task: str, pairs: Sequence[str] = ()):
    """The task ``task`` names (:func:`lossforge.tasks.spec.load_task`) made with the
    ``--task-option`` ``KEY=VALUE`` ``pairs`` (text values, typed by the task's constructor;
    ``TaskOptionError``, a ``ValueError``, names an unknown option and lists the valid ones)."""
    from lossforge.tasks.options import parse_option_pairs
    from lossforge.tasks.spec import load_task

    return load_task(task, **parse_option_pairs(list(pairs)))


__all__ = ["ALLOW_CHANGED_HELP", "STUDY_TASK_HELP", "TASK_HELP", "TASK_OPTION_HELP",
           "load_task_with_options"]
