"""``lossforge tasks --check SPEC`` and :func:`lossforge.tasks.check.check_task`: task files with
one defect each (written to ``tmp_path``) give an error finding whose fix says what to change, and
exit status 1; a clean task and the built-in ``digits`` pass with exit status 0."""
from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lfhelpers import blobs_task_source
from lossforge import cli
from lossforge.tasks.check import Finding, TaskReport, check_task, metric_problem

runner = CliRunner()

#: A clean three-class task (Gaussian blobs, a linear model); the defects below subclass it and
#: may override its ``labels(y)`` hook.
BLOBS = blobs_task_source("Blobs", "blobs", steps=5, batch_size=16, sizes=(48, 32, 32),
                          label_hook=True)

#: name -> (the subclass body, the check that fails, a fragment of its fix)
DEFECTS = {
    "labels-one-based": ("def labels(self, y):\n    return y + 1",
                         "labels (train)", "subtract 1"),
    "labels-too-many": ("def labels(self, y):\n    return y.masked_fill(y == 2, 7)",
                        "labels (train)", "num_classes = 8"),
    "labels-void-marker": ("def labels(self, y):\n    return y.masked_fill(y == 2, -1)",
                           "labels (train)", "ignore_index = -1"),
    "float-labels": ("def labels(self, y):\n    return y.float()", "targets (train)", "y.long()"),
    "wrong-output-shape": ("def make_model(self):\n    return nn.Linear(2, 4)",
                           "model output shape", "3 output channels"),
    "metric-nan": ('metrics = {"accuracy": Metric("accuracy", lambda p, t: float("nan"))}',
                   "metric accuracy", "handle the undefined case"),
    "metric-inf": ('metrics = {"accuracy": Metric("accuracy", lambda p, t: float("inf"))}',
                   "metric accuracy", "guard divisions"),
    "metric-string": ('metrics = {"accuracy": Metric("accuracy", lambda p, t: "0.5")}',
                      "metric accuracy", "not text"),
    "metric-tensor": ('metrics = {"accuracy": Metric("accuracy", lambda p, t: torch.tensor(0.5))}',
                      "metric accuracy", "value.item()"),
    "metric-none": ('metrics = {"accuracy": Metric("accuracy", lambda p, t: None)}',
                    "metric accuracy", "`return` statement"),
    "default-metric-typo": ('default_metric = "acuracy"', "default_metric",
                            "set default_metric to one of: accuracy"),
    "baseline-unknown": ('baseline = "not_a_loss"', "baseline loss", "lossforge zoo"),
    "detached-output": ("def make_model(self):\n"
                        "    class Frozen(nn.Linear):\n"
                        "        def forward(self, x):\n"
                        "            return super().forward(x).detach()\n"
                        "    return Frozen(2, 3)",
                        "training step", "do not detach"),
}


def write_task(tmp_path, body: str | None = None, name: str = "task_file.py") -> str:
    """A task file in ``tmp_path``: ``Blobs``, plus ``Broken(Blobs)`` with ``body`` when given;
    returns the spec of the class to check."""
    text = BLOBS
    if body is not None:
        text += "\n\nclass Broken(Blobs):\n" + textwrap.indent(body, "    ") + "\n"
    path = tmp_path / name
    path.write_text(text)
    return f"{path}:{'Broken' if body is not None else 'Blobs'}"


def invoke(*args):
    return runner.invoke(cli.app, ["tasks", *map(str, args)], prog_name="lossforge")


def check_json(spec: str, *extra) -> tuple[int, dict]:
    result = invoke("--check", spec, "--format", "json", *extra)
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def errors(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["level"] == "error"]


# --- the defects of the "Done when", through the CLI --------------------------------------
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_a_defect_is_an_error_that_names_the_fix(tmp_path, defect):
    body, what, fix = DEFECTS[defect]
    code, report = check_json(write_task(tmp_path, body))
    assert code == 1 and report["ok"] is False
    found = [f for f in errors(report) if f["what"] == what]
    assert found, report["findings"]
    assert fix in found[0]["fix"], found[0]


def test_labels_out_of_range_report_the_values_and_how_many(tmp_path):
    _, report = check_json(write_task(tmp_path, DEFECTS["labels-too-many"][0]))
    train = next(f for f in errors(report) if f["what"] == "labels (train)")
    y = torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(0))  # as BLOBS draws
    n = int((y == 2).sum())
    assert f"{n} of 48 labels" in train["detail"] and f"7 (×{n})" in train["detail"]
    assert "outside [0, 3) and not the ignore index 255" in train["detail"]
    # a split with bad labels stops the checks that would train on them
    assert not any(f["what"] == "training step" for f in report["findings"])


def test_a_model_that_fails_on_a_batch_shows_the_users_line(tmp_path):
    body = ("def make_model(self):\n"
            "    class Net(nn.Module):\n"
            "        def __init__(self):\n"
            "            super().__init__()\n"
            "            self.fc = nn.Linear(5, 3)\n"
            "        def forward(self, x):\n"
            "            return self.fc(x)\n"
            "    return Net()")
    spec = write_task(tmp_path, body)
    code, report = check_json(spec)
    assert code == 1
    (forward,) = [f for f in errors(report) if f["what"] == "model forward"]
    lines = (tmp_path / "task_file.py").read_text().splitlines()
    lineno = [ln.strip() for ln in lines].index("return self.fc(x)") + 1
    assert f"task_file.py:{lineno} in forward: `return self.fc(x)`" in forward["detail"]
    assert "RuntimeError" in forward["detail"] and "(16, 2)" in forward["detail"]
    assert "accept batches" in forward["fix"]


def test_the_table_colours_levels_and_shows_the_fix(tmp_path):
    result = invoke("--check", write_task(tmp_path, DEFECTS["labels-one-based"][0]))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error" in result.stdout and "subtract" in result.stdout
    assert "3 error(s)" in result.stdout  # the labels of train, val and test
    result = invoke("--check", write_task(tmp_path))
    assert result.exit_code == 0, result.output
    assert "ready" in result.stdout and "training loop" in result.stdout


# --- what passes -----------------------------------------------------------------------------------
def test_a_clean_task_file_passes(tmp_path):
    code, report = check_json(write_task(tmp_path))
    assert code == 0 and report["ok"] and report["errors"] == 0, report["findings"]
    whats = [f["what"] for f in report["findings"]]
    for what in ("loading", "split train", "model output", "training step", "metric accuracy",
                 "probe targets", "training loop"):
        assert what in whats
    loop = next(f for f in report["findings"] if f["what"] == "training loop")
    assert "accuracy" in loop["detail"]


def test_builtin_digits_passes():
    code, report = check_json("digits")
    assert code == 0 and report["task"] == "digits" and report["errors"] == 0, report["findings"]
    step = next(f for f in report["findings"] if f["what"] == "training step")
    loss = float(step["detail"].split("loss ")[1].split(",")[0])
    assert 1.5 < loss < 3.5  # cross-entropy of an untrained 10-class model is about ln 10


def test_listing_is_unchanged_without_check():
    result = invoke()
    assert result.exit_code == 0 and "digits" in result.stdout
    result = invoke("--format", "json")
    assert "digits" in {e["task"] for e in json.loads(result.stdout)}


# --- more task layouts, through the library --------------------------------------------------------
def test_a_spec_that_does_not_load_is_an_error(tmp_path):
    code, report = check_json(str(tmp_path / "nowhere.py"))
    assert code == 1
    (f,) = errors(report)
    assert f["what"] == "loading" and "task file not found" in f["detail"]


def test_a_task_file_that_raises_on_import(tmp_path):
    path = tmp_path / "boom.py"
    path.write_text("import torch\nraise RuntimeError('no GPU here')\n")
    report = check_task(str(path))
    assert not report.ok and "boom.py line 2" in report.errors[0].detail


def test_regression_output_with_a_trailing_one(tmp_path):
    body = ('kind = "regression"\nnum_classes = None\nbaseline = "mean_c(square(f - y))"\n'
            'metrics = {"mae": Metric("mae", lambda p, t: float(abs(p - t).mean()), False)}\n'
            'default_metric = "mae"\n'
            "def labels(self, y):\n    return y.float()\n"
            "def make_model(self):\n    return nn.Linear(2, 1)")
    report = check_task(write_task(tmp_path, body))
    (f,) = report.errors  # and nothing trains on that model
    assert f.what == "model output shape" and "(16, 1)" in f.detail and "squeeze" in f.fix


def test_segmentation_logits_of_the_wrong_size(tmp_path):
    body = ('''
    def data(self):
        g = torch.Generator().manual_seed(0)
        def split(n):
            y = torch.randint(0, 3, (n, 8, 8), generator=g)
            y[:, 0] = 255  # a void row
            return Split(torch.randn(n, 1, 8, 8, generator=g), y)
        return DataSplits(split(8), split(4), split(4), 3, "seg")
    def make_model(self):
        return nn.Conv2d(1, 3, 3, stride=2, padding=1)''')
    report = check_task(write_task(tmp_path, textwrap.dedent(body)))
    (f,) = report.errors
    assert f.what == "model output shape" and "(8, 3, 4, 4)" in f.detail
    assert "F.interpolate" in f.fix and "(8, 8)" in f.fix
    # the void rows are the ignore index: no label error
    assert not any(g.what.startswith("labels") for g in report.findings if g.level != "ok")


def test_a_dataset_split_is_read_only_for_its_first_batch(tmp_path):
    body = ('''
    def data(self):
        class Counting(torch.utils.data.Dataset):
            reads = 0
            def __len__(self):
                return 100_000
            def __getitem__(self, i):
                Counting.reads += 1
                return torch.tensor([float(i % 3), 0.0]), i % 3
        self.counting = Counting
        return DataSplits(Counting(), Counting(), Counting(), 3, "lazy")''')
    from lossforge.tasks.spec import load_task

    task = load_task(write_task(tmp_path, textwrap.dedent(body)))
    report = check_task(task)
    assert report.ok, str(report)
    assert task.counting.reads < 200  # 3 splits x a 16-item batch, the probes, construction
    split = next(f for f in report.findings if f.what == "split train")
    assert "first 16 of 100000 items checked" in split.detail
    loop = next(f for f in report.findings if f.what == "training loop")
    assert "not run" in loop.detail


def test_a_dataset_with_a_bad_label_in_its_first_batch(tmp_path):
    body = ('''
    def data(self):
        class Items(torch.utils.data.Dataset):
            def __len__(self):
                return 50
            def __getitem__(self, i):
                return torch.zeros(2), (9 if i == 3 else i % 3)
        return DataSplits(Items(), Items(), Items(), 3, "items")''')
    report = check_task(write_task(tmp_path, textwrap.dedent(body)))
    f = next(f for f in report.errors if f.what == "labels (train)")
    assert "9 (×1)" in f.detail and "(first 16 of 50 items checked)" in f.detail


def test_own_fit_is_called_and_its_result_checked(tmp_path):
    good = ("def fit(self, loss, *, steps, seed, device='cpu', report=None):\n"
            "    self.calls = (steps, seed)\n"
            "    if report is not None:\n        report(steps, {'accuracy': 0.5})\n"
            "    return {'accuracy': 0.5}")
    from lossforge.tasks.spec import load_task

    task = load_task(write_task(tmp_path, good))
    report = check_task(task, steps=2)
    assert report.ok, str(report)
    assert task.calls == (2, 0)
    fit = next(f for f in report.findings if f.what == "fit")
    assert "report() called 1 time(s)" in fit.detail
    bad = good.replace("return {'accuracy': 0.5}", "return {'acc': float('nan')}")
    report = check_task(write_task(tmp_path, bad, name="bad_fit.py"))
    details = {f.what: f for f in report.errors}
    assert "fit" in details and "no 'accuracy' (the default metric)" in details["fit"].detail
    assert "fit: acc" in details and "NaN" in details["fit: acc"].detail


def test_objective_task_without_probe_targets(tmp_path):
    import lossforge

    def objective(loss, steps, seed, report):
        return {"accuracy": 0.25}

    task = lossforge.objective_task(objective, name="obj", kind="classification", num_classes=3,
                                    metrics={"accuracy": "max"}, default_metric="accuracy")
    report = check_task(task)
    f = next(f for f in report.errors if f.what == "probe targets")
    assert "probe_targets=" in f.fix
    with_probes = lossforge.objective_task(
        objective, name="obj", kind="classification", num_classes=3, metrics={"accuracy": "max"},
        default_metric="accuracy", probe_targets=torch.tensor([0, 1, 2, 1]))
    report = check_task(with_probes)
    assert report.ok, str(report)
    assert any(f.what == "fit" and "accuracy 0.25" in f.detail for f in report.findings)


# --- the pieces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, what", [
    (float("nan"), "NaN"), (float("inf"), "inf"), (torch.tensor(0.5), "torch.Tensor"),
    (np.array([0.5, 0.2]), "NumPy array"), ("0.9", "a string"), (None, "None"),
    (True, "a bool"), ([0.5], "a list"),
])
def test_metric_problem_names_each_bad_value(value, what):
    problem = metric_problem(value)
    assert problem is not None and what in problem[0] and "finite Python float" in problem[1]


@pytest.mark.parametrize("value", [0.5, 0, np.float32(0.25), np.float64(1.0), np.int64(3)])
def test_metric_problem_accepts_finite_numbers(value):
    assert metric_problem(value) is None


def test_report_and_finding_contract():
    with pytest.raises(ValueError, match="level"):
        Finding("fatal", "x", "y")
    report = TaskReport("spec")
    report.add("warning", "w", "d", "f")
    assert report.ok and len(report.warnings) == 1
    report.add("error", "e", "d", "do this")
    assert not report.ok and report.to_dict()["errors"] == 1
    assert "[error] e: d -> fix: do this" in str(report)
    with pytest.raises(ValueError, match="steps"):
        check_task("digits", steps=0)
    assert math.isfinite(check_task("nosuch-task").seconds)
