"""Help texts of the task options the verbs share (``--task``, ``--allow-changed-task``): a leaf
with no commands, so that importing it registers nothing on the app."""
from __future__ import annotations

#: ``--task`` wherever a verb loads a task (search, evaluate).
TASK_HELP = ("Task: a built-in name (see `lossforge tasks`), path/to/file.py[:ATTR] or "
             "package.module:ATTR (ATTR: a Task subclass, a task, or a function returning one; "
             "optional when the file defines one Task subclass).")
#: ``--task`` on the verbs that work on a study file.
STUDY_TASK_HELP = ("The study's task named again, when it is your own: path/to/file.py[:ATTR] or "
                   "package.module:ATTR (a study file never imports the code it names; built-in "
                   "tasks need no --task).")
#: ``--allow-changed-task`` (search on an existing study, resume, refine).
ALLOW_CHANGED_HELP = "Continue even though the task file changed since the study was created."

__all__ = ["ALLOW_CHANGED_HELP", "STUDY_TASK_HELP", "TASK_HELP"]
