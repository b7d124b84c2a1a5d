"""The command line through typer's CliRunner: every command once, and bad input on each giving a
one-line error that says what to do, exit code ≠ 0, no traceback (unless ``--debug``)."""
import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

import lfhelpers as H
from lossforge import cli
from lossforge.execution import dask as D
from lossforge.study import load_study

runner = CliRunner()
TINY = ["--task", "tiny-blobs", "--budget", "16", "--seed", "1", "--generation-size", "8",
        *H.NO_LRP_CLI]


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args], prog_name="lossforge")


def one_line_error(result, *fragments, pointer=False):
    """Exit code ≠ 0, no traceback, and one line on stderr starting with ``error:`` (``pointer``:
    followed by the formula and a caret under the position of a parse error)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == (3 if pointer else 1) and lines[0].startswith("error: "), result.stderr
    if pointer:
        assert lines[2].strip() == "^"
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A finished tiny search made through the CLI, with its JSON summary."""
    path = tmp_path_factory.mktemp("cli") / "tiny.db"
    result = invoke("search", *TINY, "--study", path, "--format", "json")
    assert result.exit_code == 0, result.output
    return path, result


# --- commands ---------------------------------------------------------------------------------------
def test_zoo_and_tasks():
    result = invoke("zoo", "--format", "json")
    assert result.exit_code == 0
    assert {"ce", "focal", "baikal"} <= {e["name"] for e in json.loads(result.stdout)}
    assert invoke("zoo").exit_code == 0
    result = invoke("tasks")
    assert result.exit_code == 0 and "digits" in result.stdout and "accuracy" in result.stdout


def test_evaluate_on_digits_and_save_it_in_a_study(tiny_study, tmp_path):
    path, _ = tiny_study
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    result = invoke("evaluate", "--task", "digits", "--loss", "focal", "--steps", "20", "--seeds", "2",
                    "--format", "json", "--study", copy)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"] == "digits" and out["seeds"] == [0, 1] and out["steps"] == 20
    assert [r["loss"] for r in out["rows"]] == ["ce", "focal"]
    assert load_study(copy).meta("evaluation") == out
    report = invoke("report", copy, "-o", tmp_path / "report")
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Evaluation on digits" in page and "focal" in page


def test_verbs_are_plain_functions_that_return_data(tiny_study, tmp_path):
    from lossforge.cli.catalog import task_entries, zoo_entries
    from lossforge.cli.search import make_search
    from lossforge.cli.study import export_loss, study_summary

    path, result = tiny_study
    assert study_summary(path) == json.loads(result.stdout)
    assert "focal" in {e["name"] for e in zoo_entries()}
    assert "digits" in {t["task"] for t in task_entries()}
    (written,) = export_loss(path, tmp_path / "best.py", rank=1, name="Best")
    assert written.path.read_text() and written.cls == "Best"
    assert written.formula == json.loads(result.stdout)["hall_of_fame"][0]["formula"]
    with pytest.raises(ValueError, match="--rank must be between"):
        export_loss(path, tmp_path / "x.py", rank=999)
    run = make_search("tiny-blobs", tmp_path / "new.db", budget=4, proxy_steps=7, use_lrp=False,
                      generation_size=4, options=["remove=worst"])
    assert run.funnel.proxy.steps == 7 and not run.funnel.use_lrp
    assert run.strategy_options == {"batch_size": 4, "remove": "worst"}
    assert not (tmp_path / "new.db").exists()  # checked, nothing written


def test_search_json_is_quiet_then_show_and_export_for_plain_torch(tiny_study, tmp_path):
    path, result = tiny_study
    assert len(result.stdout.strip().splitlines()) == 1  # only the final JSON on stdout
    summary = json.loads(result.stdout)
    shown = invoke("show", path, "--format", "json")
    assert shown.exit_code == 0
    data = json.loads(shown.stdout)
    for key in ("path", "task", "metric", "strategy", "space", "seed", "budget", "explored", "best",
                "hall_of_fame", "stats"):
        assert key in data
    assert data["explored"] == 16 == summary["explored"] and data["best"] == summary["best"]
    assert invoke("show", path).exit_code == 0  # the tables

    out = tmp_path / "searched.py"
    exported = invoke("export", path, "-o", out, "--name", "Found")
    assert exported.exit_code == 0 and out.exists()
    spec = importlib.util.spec_from_file_location("searched_loss", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    criterion = module.Found()
    data = H.TinyBlobs().data()  # a plain torch loop: model, optimiser, the exported loss
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(30):
        idx = torch.randint(0, len(data.train.x), (32,))
        loss = criterion(model(data.train.x[idx]), data.train.y[idx])
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (model(data.val.x).argmax(1) == data.val.y).float().mean().item()
    assert accuracy > 0.5


def test_resume_a_finished_study_to_a_larger_budget(tiny_study, tmp_path):
    path, _ = tiny_study
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    result = invoke("resume", copy, "--budget", "24", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["explored"] == 24


def test_live_view_is_shown_on_stderr_with_the_funnel_and_hall_of_fame(tmp_path):
    result = invoke("search", "--task", "tiny-blobs", "--budget", "8", "--seed", "1",
                    "--generation-size", "8", *H.NO_LRP_CLI, "--study", tmp_path / "s.db")
    assert result.exit_code == 0, result.output
    for text in ("rejected by checks", "GEC hits", "LRP rejections", "trained", "invalid",
                 "hall of fame", "8/8"):
        assert text in result.stderr
    assert "best" in result.stdout


def test_search_view_starts_from_the_file_and_counts_each_position_once(tiny_study):
    from rich.console import Console

    from lossforge.cli.live import SearchView

    path, _ = tiny_study
    study = load_study(path)
    view = SearchView("resuming", study=path)
    assert view.explored == 16 and view.budget == 16
    stats = study.stats
    assert view.counts["trained"] == stats["proxy"]["out"]
    assert view.counts["rejected-checks"] == stats["checks"]["in"] - stats["checks"]["out"]
    assert [(f, s, formula) for f, s, formula in view.hall_of_fame()] == \
        [(h.fitness, h.size, h.formula) for h in study.hall_of_fame]
    event = {"explored": 17, "budget": 24, "generation": 2, "position": 0, "status": "trained",
             "formula": "p", "fitness": 2.0, "size": 1, "reason": ""}
    view.update(event)
    view.update(event)  # the study may report a position twice
    assert view.explored == 17 and view.counts["trained"] == stats["proxy"]["out"] + 1
    assert view.hall_of_fame()[0] == (2.0, 1, "p")
    console = Console(record=True, width=120)
    console.print(view)
    text = console.export_text()
    assert "17/24" in text and "funnel: explored 17" in text and "last: trained 2.0000" in text


# --- bad input --------------------------------------------------------------------------------------
def test_resume_missing_file(tmp_path):
    one_line_error(invoke("resume", tmp_path / "missing.db"), "does not exist")


@pytest.mark.parametrize("args", [["search", "--task", "tiny-blobs", "--budget", "0"],
                                  ["search", "--task", "tiny-blobs", "--budget", "-3"]])
def test_bad_budget(tmp_path, args):
    one_line_error(invoke(*args, "--study", tmp_path / "s.db"), "--budget must be a positive")
    assert not (tmp_path / "s.db").exists()


def test_bad_budget_on_resume(tiny_study):
    one_line_error(invoke("resume", tiny_study[0], "--budget", "0"), "--budget must be a positive")


def test_unknown_task_suggests(tmp_path):
    line = one_line_error(invoke("search", "--task", "digts", "--study", tmp_path / "s.db"),
                          "unknown task 'digts'", "did you mean 'digits'?")
    assert "known tasks:" in line


def test_unknown_strategy_suggests(tmp_path):
    one_line_error(invoke("search", "--task", "tiny-blobs", "--strategy", "agin",
                          "--study", tmp_path / "s.db"), "unknown strategy 'agin'", "'aging'")


def test_unknown_option_and_command_suggest():
    result = invoke("search", "--task", "tiny-blobs", "--study", "x.db", "--budgt", "3")
    assert result.exit_code == 2
    one_line_error(result, "--budgt", "--budget", "lossforge search --help")
    one_line_error(invoke("serch"), "Did you mean 'search'?")
    one_line_error(invoke("search", "--task", "tiny-blobs", "--study", "x.db", "--budget", "ten"),
                   "'--budget'")


@pytest.mark.parametrize("command", [["show"], ["resume"], ["export", "-o", "x.py"],
                                     ["report", "-o", "rep"]])
def test_corrupt_study_file(tmp_path, command):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not SQLite " * 200)
    one_line_error(invoke(command[0], junk, *command[1:]), "is not a lossforge study")


def test_study_made_with_other_settings_is_refused(tiny_study):
    one_line_error(invoke("search", *TINY[:-2], "--proxy-steps", "7", "--study", tiny_study[0]),
                   "funnel.proxy.steps: study has 25, requested 7", "lossforge resume")


def test_executor_options(tmp_path, monkeypatch):
    s = tmp_path / "s.db"
    one_line_error(invoke("search", *TINY, "--study", s, "--workers", "0"), "--workers must be at least 1")
    one_line_error(invoke("search", *TINY, "--study", s, "--workers", "2", "--dask", "local:2"),
                   "either --workers")
    one_line_error(invoke("search", *TINY, "--study", s, "--timeout", "-1"), "--timeout must be")
    monkeypatch.setattr(D, "CONNECT_TIMEOUT", 1.0)
    one_line_error(invoke("search", *TINY, "--study", s, "--dask", "tcp://127.0.0.1:9"),
                   "could not reach the Dask scheduler", "local:N")


def test_evaluate_bad_input():
    one_line_error(invoke("evaluate", "--task", "digits", "--loss", "log(("), "not a valid formula",
                   pointer=True)
    one_line_error(invoke("evaluate", "--task", "digits", "--loss", "ce", "--seeds", "0"), "--seeds")
    one_line_error(invoke("evaluate", "--task", "digits", "--loss", "ce", "--study", "nope.db"),
                   "does not exist")


@pytest.mark.parametrize("command", [["show", "STUDY"], ["zoo"], ["resume", "STUDY"],
                                     ["search", "--task", "tiny-blobs", "--study", "STUDY"],
                                     ["evaluate", "--task", "digits", "--loss", "ce"],
                                     ["refine", "STUDY"]])
def test_unknown_format_names_the_valid_ones(tmp_path, command):
    study = tmp_path / "s.db"
    args = [study if a == "STUDY" else a for a in command]
    line = one_line_error(invoke(*args, "--format", "yaml"), "'yaml'", "'table'", "'json'")
    assert "--format" in line
    assert not study.exists()  # refused before anything ran


def test_debug_shows_the_traceback(tmp_path):
    result = invoke("--debug", "resume", tmp_path / "missing.db")
    assert result.exit_code != 0 and "does not exist" in str(result.exception)


# --- same study whatever the executor ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--workers", "2"], ["--dask", "local:2"]])
def test_workers_and_dask_give_the_in_process_study(tiny_study, tmp_path, executor):
    path = tmp_path / "s.db"
    result = invoke("search", *TINY, "--study", path, "--format", "json", *executor)
    assert result.exit_code == 0, result.output
    assert H.rows_key(load_study(path)) == H.rows_key(load_study(tiny_study[0]))
    assert json.loads(result.stdout)["hall_of_fame"] == json.loads(tiny_study[1].stdout)["hall_of_fame"]


def test_strategy_options_reach_the_study_and_bad_ones_fail(tmp_path):
    s = tmp_path / "o.db"
    result = invoke("search", *TINY, "--study", s, "--option", "remove=worst",
                    "--option", "tournament_size=3", "--format", "json")
    assert result.exit_code == 0, result.output
    opts = load_study(s).settings["strategy_options"]
    assert opts["remove"] == "worst" and opts["tournament_size"] == 3  # JSON number, not text
    one_line_error(invoke("search", *TINY, "--study", tmp_path / "p.db", "--option", "remove"),
                   "--option", "KEY=VALUE")
    one_line_error(invoke("search", *TINY, "--study", tmp_path / "q.db", "--option", "colour=red"),
                   "colour")


def test_rung_check_prints_the_measured_choice_and_its_flags():
    import json

    from lossforge.evaluation.rung_check import RungCheck

    r = invoke("rung-check", "--task", "digits", "--max-steps", 18, "--levels", 3,
               "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["rungs"] == [2, 6, 18] and len(d["losses"]) >= 4
    low, brackets = RungCheck.from_dict(d).choose()
    assert (d["chosen"]["min_steps"], d["chosen"]["brackets"]) == (low, brackets)
    assert d["flags"] == (f"--fidelity asha --min-steps {low} --max-steps 18 --eta 3 --brackets 1"
                          if low < 18 else "--fidelity none")
    one_line_error(invoke("rung-check", "--task", "digits", "--eta", 1), "--eta")


def test_search_min_steps_must_be_steps_or_auto(tmp_path):
    one_line_error(invoke("search", *TINY, "--study", tmp_path / "s.db", "--fidelity", "asha",
                          "--min-steps", "fast"), "--min-steps 'fast'", "auto")
