"""Tasks named on the command line by a file outside the repository (``--task path/to/file.py``):
searched in-process, with ``--workers 2`` and with ``--dask local:2``, killed with SIGKILL and
resumed, shown, reported and exported — the same study as an in-process run; a study file never
imports the code it names; a changed task file is refused on resume unless allowed."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lfhelpers as H
from lossforge import cli
from lossforge.storage import StudyFileError
from lossforge.study import LossSearch, load_study, resume
from lossforge.study_task import StudyTaskChangedError
from lossforge.tasks.spec import module_name_for

runner = CliRunner()

#: The tiny task of ``lfhelpers.TinyBlobs``, in a file of its own (no import from the tests).
TASK_SOURCE = H.blobs_task_source()
SEARCH = ["--budget", "16", "--seed", "1", "--generation-size", "8", *H.NO_LRP_CLI]


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args], prog_name="lossforge")


def one_line_error(result, *fragments) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def write_task(folder: Path, source: str = TASK_SOURCE, name: str = "blobs_task.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source)
    return path


def forget(path: Path) -> None:
    """Drop the task file's module from this process (as a fresh process would start)."""
    sys.modules.pop(module_name_for(path), None)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    path = write_task(tmp_path_factory.mktemp("project"))
    assert not str(path).startswith(str(Path(__file__).resolve().parents[1]))  # outside the repo
    return path


@pytest.fixture(scope="module")
def reference(task_file, tmp_path_factory):
    """The in-process search of the file task through the CLI, and its rows."""
    path = tmp_path_factory.mktemp("ref") / "ref.db"
    result = invoke("search", "--task", task_file, "--study", path, *SEARCH, "--format", "json")
    assert result.exit_code == 0, result.output
    study = load_study(path)
    try:
        return path, H.rows_key(study)
    finally:
        study.close()


# --- in-process -------------------------------------------------------------------------------------
def test_a_file_task_gives_the_study_of_the_same_task_built_in(reference, task_file, tmp_path):
    path, rows = reference
    assert sum(r[4] == "trained" for r in rows) >= 8
    study = load_study(path)
    s = study.settings
    study.close()
    assert s["task"] == "file-blobs" and s["task_spec"] == str(task_file.resolve())
    assert len(s["task_fingerprint"]) == 64 and s["num_classes"] == 3
    # the same task as the registered tiny-blobs, so the same rows, from Python too
    builtin = LossSearch(task="tiny-blobs", storage=tmp_path / "b.db", budget=16, seed=1,
                         funnel=H.NO_LRP, strategy_options={"batch_size": 8}).run()
    assert H.rows_key(builtin) == rows
    assert builtin.settings["task_spec"] == "tiny-blobs" and builtin.settings["task_fingerprint"] is None
    builtin.close()
    api = LossSearch(task=f"{task_file}:FileBlobs", storage=tmp_path / "a.db", budget=16, seed=1,
                     funnel=H.NO_LRP, strategy_options={"batch_size": 8}).run()
    assert H.rows_key(api) == rows
    assert api.settings["task_spec"] == f"{task_file.resolve()}:FileBlobs"
    api.close()


def test_resume_needs_the_task_named_again_and_refuses_another(reference, task_file, tmp_path):
    path, _ = reference
    line = one_line_error(invoke("resume", path), "does not import the code it names",
                          f"--task {task_file.resolve()}")
    assert "tiny" not in line
    one_line_error(invoke("resume", path, "--task", "tiny-blobs"), "created for task 'file-blobs'",
                   "not 'tiny-blobs'")
    one_line_error(invoke("refine", path), "--task", str(task_file.resolve()))
    with pytest.raises(StudyFileError, match="name it again"):
        resume(path)
    # named again, to a larger budget: the same as a search with that budget from the start
    grown = tmp_path / "grown.db"
    grown.write_bytes(path.read_bytes())
    result = invoke("resume", grown, "--task", task_file, "--budget", "20", "--format", "json")
    assert result.exit_code == 0, result.output
    again = LossSearch(task=str(task_file), storage=tmp_path / "twenty.db", budget=20, seed=1,
                       funnel=H.NO_LRP, strategy_options={"batch_size": 8}).run()
    assert H.rows_key(load_study(grown)) == H.rows_key(again)
    refined = invoke("refine", grown, "--task", task_file, "--top", "2", "--round", "25:1:1",
                     "--format", "json")
    assert refined.exit_code == 0, refined.output
    assert len(load_study(grown).meta("refine")["survivors"]) == 1


def test_a_changed_task_file_is_refused_unless_allowed(tmp_path):
    task = write_task(tmp_path / "proj")
    path = tmp_path / "s.db"
    args = ["--budget", "8", "--seed", "1", "--generation-size", "8", *H.NO_LRP_CLI]
    assert invoke("search", "--task", task, "--study", path, *args).exit_code == 0
    before = load_study(path).settings["task_fingerprint"]
    task.write_text(TASK_SOURCE + "\n# tuned the model\n")
    forget(task)  # as a new process would: the file is read again
    line = one_line_error(invoke("resume", path, "--task", task, "--budget", "12"),
                          f"task file {task.resolve()} changed since the study was created",
                          f"sha256 {before[:12]}", "--allow-changed-task")
    assert "\n" not in line
    one_line_error(invoke("search", "--task", task, "--study", path, *args), "changed since")
    with pytest.raises(StudyTaskChangedError):
        resume(path, task=str(task))
    result = invoke("resume", path, "--task", task, "--budget", "12", "--allow-changed-task")
    assert result.exit_code == 0, result.output
    study = load_study(path)
    assert study.explored == 12
    assert study.settings["task_fingerprint"] not in (before, None)
    assert study.meta("task_changes")[0]["task_fingerprint"] == before
    assert study.meta("task_changes")[0]["explored"] == 8
    study.close()
    # the new fingerprint is the study's now: resuming with that file needs no flag
    assert invoke("resume", path, "--task", task, "--budget", "13").exit_code == 0


def test_show_report_and_export_import_nothing_and_work_without_the_file(tmp_path):
    task = write_task(tmp_path / "gone", name="gone_task.py")
    path = tmp_path / "s.db"
    args = ["--budget", "8", "--seed", "1", "--generation-size", "8", *H.NO_LRP_CLI]
    assert invoke("search", "--task", task, "--study", path, *args).exit_code == 0
    task.unlink()
    forget(task)
    show = invoke("show", path, "--format", "json")
    assert show.exit_code == 0, show.output
    assert '"task_spec": "%s"' % task.resolve() in show.stdout
    report = invoke("report", path, "-o", tmp_path / "report")
    assert report.exit_code == 0, report.output
    assert "3 classes" in (tmp_path / "report" / "index.html").read_text()  # stored, not imported
    export = invoke("export", path, "-o", tmp_path / "loss.py")
    assert export.exit_code == 0, export.output
    assert "import torch" in (tmp_path / "loss.py").read_text()
    assert module_name_for(task) not in sys.modules  # none of them imported the task file
    one_line_error(invoke("resume", path, "--task", task), "task file not found", str(task.resolve()))
    one_line_error(invoke("show", path, "--task", task), "task file not found")


def test_show_and_export_with_task_say_whether_it_changed(tmp_path):
    task = write_task(tmp_path / "p", name="shown_task.py")
    path = tmp_path / "s.db"
    args = ["--budget", "8", "--seed", "1", "--generation-size", "8", *H.NO_LRP_CLI]
    assert invoke("search", "--task", task, "--study", path, *args).exit_code == 0
    shown = invoke("show", path, "--task", task)
    assert shown.exit_code == 0 and "task file unchanged" in shown.stderr
    task.write_text(TASK_SOURCE + "\n# edited\n")
    forget(task)
    shown = invoke("show", path, "--task", task)
    assert shown.exit_code == 0 and "changed since the study was created" in shown.stderr
    exported = invoke("export", path, "-o", tmp_path / "l.py", "--task", task)
    assert exported.exit_code == 0 and "--allow-changed-task" in exported.stderr
    one_line_error(invoke("report", path, "-o", tmp_path / "r", "--task", "tiny-blobs"),
                   "'tiny-blobs'", "'file-blobs'")


# --- errors on the command line ---------------------------------------------------------------------
def test_task_spec_errors_are_one_line(tmp_path):
    study = tmp_path / "s.db"
    one_line_error(invoke("search", "--task", tmp_path / "nope.py", "--study", study),
                   "task file not found", str(tmp_path / "nope.py"))
    broken = write_task(tmp_path, "import torch\nx = 1 +\n", name="broken.py")
    one_line_error(invoke("search", "--task", broken, "--study", study), "broken.py line 2",
                   "SyntaxError")
    raising = write_task(tmp_path, "VALUE = {}['missing']\n", name="raising.py")
    one_line_error(invoke("evaluate", "--task", raising, "--loss", "ce"), "raising.py line 1",
                   "KeyError")
    task = write_task(tmp_path / "p")
    one_line_error(invoke("search", "--task", f"{task}:FileBlob", "--study", study),
                   "has no 'FileBlob'", "FileBlobs")
    one_line_error(invoke("evaluate", "--task", f"{task}:Split", "--loss", "ce"),
                   "'Split' in task file", "does not subclass lossforge.tasks.Task")
    one_line_error(invoke("search", "--task", "no_such_package.mod:Task", "--study", study),
                   "cannot find module 'no_such_package.mod'")
    assert not study.exists()


def test_evaluate_a_file_task(tmp_path):
    task = write_task(tmp_path / "p")
    result = invoke("evaluate", "--task", f"{task}:FileBlobs", "--loss", "ce", "--loss", "focal",
                    "--seeds", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"task": "file-blobs"' in result.stdout


# --- workers: killed and resumed ----------------------------------------------------------------------
def _rows(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    except sqlite3.Error:
        return 0


def _lossforge(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lossforge", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--workers", "2"], ["--dask", "local:2"]])
def test_killed_search_of_a_file_task_resumes_to_the_in_process_study(reference, task_file,
                                                                       tmp_path, executor):
    path = tmp_path / "killed.db"
    # a relative path, from the task's folder, as a user types it
    proc = _lossforge(["search", "--task", task_file.name, "--study", path, *SEARCH, *executor,
                       "--format", "json"], cwd=task_file.parent)
    deadline = time.monotonic() + 240
    while _rows(path) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= _rows(path) < 16, "killed too late: the search had finished"
    result = _lossforge(["resume", path, "--task", task_file, *executor, "--format", "json"],
                        cwd=tmp_path)
    assert result.wait(timeout=300) == 0, result.stderr.read().decode()
    study = load_study(path)
    assert study.explored == 16
    assert H.rows_key(study) == reference[1]
    study.close()
    forget(task_file)  # the readers import nothing: not even from this process's cache
    for verb in (["show", path], ["report", path, "-o", tmp_path / "r"],
                 ["export", path, "-o", tmp_path / "loss.py"]):
        done = invoke(*verb)
        assert done.exit_code == 0, done.output
    assert module_name_for(task_file) not in sys.modules
