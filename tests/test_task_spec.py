"""``lossforge.tasks.spec``: tasks named by registered name, ``file.py[:ATTR]`` or
``package.module:ATTR``, and every error path (messages checked for what they must say)."""
from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lfhelpers  # registers tiny-blobs; blobs_task_source
from lossforge.tasks.spec import (TaskSpecError, _split, canonical_spec, import_task_module, is_spec,
                                  load_task, loaded_source, module_name_for, spec_fingerprint, spec_of)

#: A tiny task file, modelled on ``lfhelpers.TinyBlobs``; ``FileBlobs(n=60)`` has splits of ``n``.
BLOBS = lfhelpers.blobs_task_source(steps=5, size_arg=60)


@pytest.fixture(autouse=True)
def _forget_loaded_files(tmp_path, monkeypatch):
    """Undo what loading files from ``tmp_path`` did: its folders on ``sys.path``, its modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    root = str(tmp_path.resolve())
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(root):
            del sys.modules[name]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def message(spec, **options) -> str:
    with pytest.raises(TaskSpecError) as info:
        load_task(spec, **options)
    return str(info.value)


# --- is_spec / parsing / canonical form -----------------------------------------------------------
def test_is_spec():
    assert not is_spec("digits") and not is_spec("tiny-blobs") and not is_spec("pkg.mod")
    assert is_spec("my_task.py") and is_spec("a/b.py:T") and is_spec("pkg.mod:T")


def test_split_survives_windows_drive_letters():
    assert _split(r"C:\work\t.py:Blobs") == (r"C:\work\t.py", "Blobs", True)
    assert _split(r"C:\work\t.py") == (r"C:\work\t.py", None, True)
    assert _split("pkg.mod:make") == ("pkg.mod", "make", False)
    assert _split("dir/t.py") == ("dir/t.py", None, True)


def test_canonical_spec_makes_file_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path.resolve() / "sub" / "t.py")
    assert canonical_spec("sub/t.py:Blobs") == absolute + ":Blobs"
    assert canonical_spec("sub/t.py") == absolute
    assert canonical_spec(canonical_spec("sub/t.py:Blobs")) == absolute + ":Blobs"
    assert canonical_spec("pkg.mod:make") == "pkg.mod:make"
    assert canonical_spec("digits") == "digits"


# --- resolution -----------------------------------------------------------------------------------
def test_registered_name_delegates_to_the_registry():
    task = load_task("tiny-blobs")
    assert isinstance(task, lfhelpers.TinyBlobs) and spec_of(task) == "tiny-blobs"


def test_task_object_is_returned_unchanged():
    task = lfhelpers.TinyBlobs()
    assert load_task(task) is task


def test_file_and_class(tmp_path):
    path = write(tmp_path, "blobs_task.py", BLOBS)
    task = load_task(f"{path}:FileBlobs", n=10)
    assert type(task).__name__ == "FileBlobs" and task.name == "file-blobs" and task.n == 10
    assert len(task.data().train) == 10
    assert spec_of(task) == f"{path.resolve()}:FileBlobs"
    assert type(task).__module__ == module_name_for(path)


def test_file_without_attr_finds_the_one_subclass_defined_in_it(tmp_path):
    write(tmp_path, "base_tasks.py", BLOBS)
    path = write(tmp_path, "derived.py", """
        from base_tasks import FileBlobs          # imported: does not count
        from lossforge.tasks import Task


        class Derived(FileBlobs):
            name = "derived"
    """)
    task = load_task(str(path))
    assert type(task).__name__ == "Derived" and task.name == "derived"
    assert spec_of(task) == str(path.resolve())


def test_instance_and_factories(tmp_path):
    path = write(tmp_path, "factories.py", BLOBS + '''

TASK = FileBlobs(n=7)


def make(n=5):
    return FileBlobs(n=n)
''')
    assert load_task(f"{path}:TASK").n == 7
    assert load_task(f"{path}:make").n == 5
    assert load_task(f"{path}:make", n=3).n == 3
    assert load_task(f"{path}:FileBlobs").n == 60


def test_module_spec(tmp_path, monkeypatch):
    write(tmp_path, "specpkg_a/__init__.py", "")
    write(tmp_path, "specpkg_a/tasks.py", BLOBS + "\n\ndef build():\n    return FileBlobs(n=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task("specpkg_a.tasks:FileBlobs")
    assert type(task).__module__ == "specpkg_a.tasks" and spec_of(task) == "specpkg_a.tasks:FileBlobs"
    assert load_task("specpkg_a.tasks:build").n == 4
    assert type(load_task("specpkg_a.tasks:")).__name__ == "FileBlobs"  # ATTR omitted


def test_a_class_without_a_name_is_named_after_itself(tmp_path):
    path = write(tmp_path, "unnamed.py", BLOBS.replace('name = "file-blobs"', ""))
    assert load_task(str(path)).name == "FileBlobs"


def test_same_spec_twice_same_module_and_classes(tmp_path, monkeypatch):
    path = write(tmp_path, "twice.py", BLOBS)
    monkeypatch.chdir(tmp_path)
    a, b = load_task("twice.py:FileBlobs"), load_task(f"{path}:FileBlobs")
    assert a is not b and type(a) is type(b)
    assert import_task_module("twice.py") is sys.modules[module_name_for(path)]


def test_sibling_modules_import(tmp_path):
    write(tmp_path, "helpers_for_spec.py", "WIDTH = 3\n")
    path = write(tmp_path, "uses_sibling.py", BLOBS.replace(
        "import torch\n", "import torch\nfrom helpers_for_spec import WIDTH\n"))
    assert load_task(str(path)).num_classes == 3


def test_a_pickled_task_unpickles_in_a_worker_that_imports_the_spec(tmp_path):
    path = write(tmp_path, "pickled.py", BLOBS)
    blob = pickle.dumps(load_task(f"{path}:FileBlobs", n=9))
    code = ("import pickle, sys; from lossforge.tasks.spec import import_task_module; "
            f"import_task_module({str(path)!r}); t = pickle.loads(sys.stdin.buffer.read()); "
            "print(type(t).__name__, t.n)")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=120,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == ["FileBlobs", "9"]


def test_a_worker_without_the_file_imports_it_from_its_source(tmp_path):
    path = write(tmp_path, "shipped.py", BLOBS)
    spec = f"{path}:FileBlobs"
    blob = pickle.dumps(load_task(spec, n=8))
    source = loaded_source(spec)
    assert source == path.read_bytes() and loaded_source("tiny-blobs") is None
    del sys.modules[module_name_for(path)]  # a fresh worker elsewhere: no module, no file
    path.unlink()
    import_task_module(spec, source=source)
    task = pickle.loads(blob)
    assert type(task).__name__ == "FileBlobs" and task.n == 8 and len(task.data().val) == 8


def test_a_worker_with_a_stale_copy_runs_the_studys_source(tmp_path):
    path = write(tmp_path, "stale.py", BLOBS)
    source = path.read_bytes()
    path.write_text(BLOBS.replace('name = "file-blobs"', 'name = "edited"'))
    import_task_module(str(path), source=source)  # the worker's copy was edited since
    assert load_task(f"{path}:FileBlobs").name == "file-blobs"


# --- fingerprints ---------------------------------------------------------------------------------
def test_fingerprint_follows_the_file(tmp_path):
    path = write(tmp_path, "fp.py", BLOBS)
    first = spec_fingerprint(f"{path}:FileBlobs")
    assert first == hashlib.sha256(path.read_bytes()).hexdigest() == spec_fingerprint(str(path))
    path.write_text(BLOBS + "\n# changed\n")
    assert spec_fingerprint(f"{path}:FileBlobs") != first
    assert spec_fingerprint("tiny-blobs") is None


def test_fingerprint_of_a_module_spec_is_its_source_file(tmp_path, monkeypatch):
    write(tmp_path, "specpkg_fp/__init__.py", "")
    mod = write(tmp_path, "specpkg_fp/tasks.py", BLOBS)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert spec_fingerprint("specpkg_fp.tasks:FileBlobs") == hashlib.sha256(mod.read_bytes()).hexdigest()
    with pytest.raises(TaskSpecError, match="cannot find module 'specpkg_nope'"):
        spec_fingerprint("specpkg_nope:FileBlobs")
    with pytest.raises(TaskSpecError, match="task file not found"):
        spec_fingerprint(str(tmp_path / "gone.py"))


# --- errors ---------------------------------------------------------------------------------------
def test_unknown_registered_name():
    msg = message("tiny-blob")
    assert "unknown task 'tiny-blob'" in msg and "did you mean 'tiny-blobs'" in msg
    assert "path/to/file.py:ATTR" in msg


def test_not_a_string_or_task():
    assert "got an int (42)" in message(42)


def test_file_not_found_shows_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "my_task.py", BLOBS)
    msg = message("my_tsak.py:FileBlobs")
    assert f"task file not found: {tmp_path.resolve() / 'my_tsak.py'}" in msg
    assert "did you mean 'my_task.py'" in msg and "current directory" in msg
    assert "is a directory" in message(f"{tmp_path}/:FileBlobs")
    assert "did you mean" in message("my_task:FileBlobs".replace("my_task", f"{tmp_path}/my_task"))


def test_module_not_found_vs_file_here(tmp_path, monkeypatch):
    msg = message("specpkg_missing.tasks:FileBlobs")
    assert "cannot find module 'specpkg_missing.tasks'" in msg and "install" in msg
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "local_task.py", BLOBS)
    msg = message("local_task:FileBlobs")
    assert "cannot find module 'local_task'" in msg and "'local_task.py:FileBlobs'" in msg


def test_missing_import_inside_the_file_shows_the_users_line(tmp_path):
    source = BLOBS.replace("import torch\n", "import torch\nimport sklearnn\n", 1)
    path = write(tmp_path, "my_task.py", source)
    msg = message(f"{path}:FileBlobs")
    line = path.read_text().splitlines().index("import sklearnn") + 1
    assert f"importing task file {path.resolve()} failed" in msg
    assert (f"my_task.py line {line}: `import sklearnn` raised ModuleNotFoundError: "
            "No module named 'sklearnn'") in msg
    assert "installed" in msg
    assert module_name_for(path) not in sys.modules  # a fixed file loads on the next try
    path.write_text(BLOBS)
    assert load_task(f"{path}:FileBlobs").name == "file-blobs"


def test_exception_inside_the_file_names_it_and_the_deepest_place(tmp_path):
    write(tmp_path, "helper_raises.py", "def boom():\n    return 1 / 0\n")
    path = write(tmp_path, "raises.py", "from helper_raises import boom\n\nVALUE = boom()\n")
    msg = message(str(path))
    assert "raises.py line 3: `VALUE = boom()` raised ZeroDivisionError: division by zero" in msg
    assert "(in helper_raises.py line 2: `return 1 / 0`)" in msg


def test_syntax_error_and_exit_in_the_file(tmp_path):
    path = write(tmp_path, "bad_syntax.py", "x = 1\ndef f(:\n    pass\n")
    msg = message(str(path))
    assert "bad_syntax.py line 2: SyntaxError" in msg and "`def f(:`" in msg
    path = write(tmp_path, "exits.py", "import sys\nsys.exit(2)\n")
    msg = message(str(path))
    assert "called exit(2)" in msg and "exits.py line 2" in msg and "__main__" in msg


def test_exception_inside_a_module_spec(tmp_path, monkeypatch):
    write(tmp_path, "specpkg_b/__init__.py", "")
    write(tmp_path, "specpkg_b/tasks.py", "import os\nimport sklearnn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    msg = message("specpkg_b.tasks:FileBlobs")
    assert "importing module 'specpkg_b.tasks' failed" in msg
    assert "tasks.py line 2: `import sklearnn` raised ModuleNotFoundError" in msg


def test_missing_attr_lists_what_the_file_has(tmp_path):
    path = write(tmp_path, "listing.py", BLOBS + '''

TASK = FileBlobs()


def make_task():
    return FileBlobs()
''')
    msg = message(f"{path}:FileBlob")
    assert f"task file {path.resolve()} has no 'FileBlob' (did you mean 'FileBlobs'?)" in msg
    assert "Task subclasses: FileBlobs" in msg and "task instances: TASK" in msg
    assert "functions: accuracy, make_task" in msg  # the metric function of BLOBS, too
    assert "has no attribute 'x'" in message(f"{path}:FileBlobs.x")


def test_no_attr_and_no_or_several_subclasses(tmp_path):
    path = write(tmp_path, "none_here.py", "from lossforge.tasks.builtin import BUILTIN\n\n"
                 "def build():\n    return None\n")
    msg = message(str(path))
    assert "defines no Task subclass" in msg and "functions: build" in msg and ":ATTR" in msg
    path = write(tmp_path, "two_here.py", BLOBS + "\n\nclass Other(FileBlobs):\n    name = 'o'\n")
    msg = message(str(path))
    assert "defines 2 Task subclasses (FileBlobs, Other)" in msg
    assert f"'{path}:FileBlobs'" in msg


def test_objects_that_are_not_tasks(tmp_path):
    path = write(tmp_path, "not_tasks.py", BLOBS + '''

NUMBER = 42


class Plain:
    pass


def returns_number():
    return 3


def raises():
    raise RuntimeError("no data here")
''')
    msg = message(f"{path}:NUMBER")
    assert "'NUMBER'" in msg and "an int (42), not a task" in msg and "Task subclass" in msg
    msg = message(f"{path}:Plain")
    assert "the class Plain, which does not subclass lossforge.tasks.Task" in msg
    msg = message(f"{path}:returns_number")
    assert "returns_number() in task file" in msg and "returned an int (3), not a task" in msg
    msg = message(f"{path}:raises")
    assert "calling raises() from task file" in msg
    assert "not_tasks.py line" in msg and "RuntimeError: no data here" in msg
    assert "`raise RuntimeError(\"no data here\")`" in msg


def test_options_that_do_not_fit(tmp_path):
    path = write(tmp_path, "opts.py", BLOBS + "\n\nTASK = FileBlobs()\n")
    assert "takes no options (n)" in message(f"{path}:TASK", n=3)
    msg = message(f"{path}:FileBlobs", size=3)
    assert "creating FileBlobs() from task file" in msg and "TypeError" in msg and "size" in msg


def test_malformed_specs():
    assert "names no file or module" in message(":FileBlobs")
    assert "is not a Python name" in message("pkg.mod:1x")
    assert "neither a .py file nor a module name" in message("my-pkg:Task")
