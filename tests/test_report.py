"""``lossforge report``: index.html and PNGs from the study file alone; the loss-vs-probability
probe; and, where Chromium is installed, the page opened headless with its plots visible."""
import math
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import lfhelpers as H
from lossforge import report as R
from lossforge.comparison import evaluate
from lossforge.expr import parse
from lossforge.report import figures as F
from lossforge.storage import Store
from lossforge.study import LossSearch

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "s.db"
    LossSearch(task="tiny-blobs", storage=path, budget=16, seed=1, funnel=H.NO_LRP,
               strategy_options={"batch_size": 8}).run().close()
    return path


@pytest.fixture(scope="module")
def written(study_file, tmp_path_factory):
    """The study file alone, copied elsewhere (as on another machine), with an evaluation saved."""
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "copy.db"
    shutil.copy(study_file, elsewhere)
    store = Store.open(elsewhere)
    store.set_meta("evaluation", evaluate("tiny-blobs", ["mse"], seeds=2, steps=5).to_dict())
    store.close()
    out = tmp_path_factory.mktemp("report")
    index = R.write_report(elsewhere, out, top=3)
    return index, elsewhere


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.tables, self._in = [], [], 0, None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag == "table":
            self.tables += 1
        if tag in ("h1", "h2", "h3"):
            self._in = tag
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.headings[-1] += data


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_html_and_pngs(written):
    index, _ = written
    page = _Page()
    page.feed(index.read_text())
    assert index.name == "index.html"
    headings = " | ".join(page.headings)
    for h in ("Best loss", "Search progress", "Funnel", "Hall of fame",
              "Top losses against cross-entropy", "#1", "#2", "Evaluation on tiny-blobs"):
        assert h in headings, headings
    srcs = [img["src"] for img in page.images]
    for name in ("progress.png", "funnel.png", "pareto.png", "loss_1.png", "loss_2.png", "loss_3.png"):
        assert name in srcs
        assert png_size(index.parent / name) == (960, 540)
        assert (index.parent / name).stat().st_size > 10_000
    for src in srcs:  # every image the page shows exists, is a PNG, not empty
        w, h = png_size(index.parent / src)
        assert w > 10 and h > 5
    assert all(img.get("alt") for img in page.images)
    assert any(s.startswith("formula_") for s in srcs)  # mathtext typeset the formulas
    assert page.tables >= 4  # settings, funnel, hall of fame, evaluation
    text = index.read_text()
    assert "<script" not in text and "http" not in text  # self-contained
    assert "mse" in text and "Δ" in text


def test_every_plot_has_axis_labels(written):
    _, path = written
    figures = R.make_figures(R.read_study(path), top=3)
    assert set(figures) == {"progress", "funnel", "pareto", "loss_1", "loss_2", "loss_3"}
    for name, fig in figures.items():
        for ax in fig.axes:
            assert ax.get_ylabel(), (name, "y")
            if ax.get_xlabel() == "":  # a twin axis shares the x axis of its panel
                assert any(o is not ax and o.bbox.bounds == ax.bbox.bounds and o.get_xlabel()
                           for o in fig.axes), name


def test_the_funnel_plot_has_a_bar_per_stage_in_stage_order(written):
    from lossforge.evaluation.candidate import STAGES

    assert set(F.STAGE_LOOK) == set(STAGES)
    _, path = written
    ax = R.make_figures(R.read_study(path), top=0)["funnel"].axes[0]
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    assert labels == (["explored"] + [F.STAGE_LOOK[st][1] for st in STAGES]
                      + ["invalid", "failed"])


def test_probe_matches_cross_entropy_and_squared_error():
    xs, values, grads = R.probe_curve(parse(F.CE), num_classes=4, points=9)
    for t, v, g in zip(xs, values, grads):
        assert v == pytest.approx(-math.log(t + 1e-6), rel=1e-4)  # protected log
        assert g == pytest.approx(-1 / (t + 1e-6), rel=1e-4)
    xs, values, grads = R.probe_curve(parse(F.MSE), num_classes=4, points=7)
    for r, v, g in zip(xs, values, grads):
        assert v == pytest.approx(r * r) and g == pytest.approx(2 * r)


def test_report_of_a_study_with_nothing_trained_and_an_unknown_task(tmp_path):
    path = tmp_path / "empty.db"
    Store.create(path, {"task": "someone-elses-task", "metric": "accuracy", "strategy": "random",
                        "space": "autoloss-zero", "seed": 0, "budget": 10}).close()
    index = R.write_report(path, tmp_path / "out")
    text = index.read_text()
    assert "No candidate has been trained yet" in text and "0 / 10" in text
    assert png_size(tmp_path / "out" / "progress.png") == (960, 540)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install -y chromium)")
def test_chromium_opens_the_report_and_shows_the_plots(written, tmp_path):
    index, _ = written
    shot = tmp_path / "shot.png"
    done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}",
                           index.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    ink = (pixels.sum(axis=2) < 2.7).mean()
    assert ink > 0.02, "the page looks empty"
    red = ((abs(pixels[..., 0] - 0.84) < 0.06) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)).sum()
    assert red > 500, "no plot line (C3 red) visible: the images did not load"


# --- multi-fidelity rungs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asha_report(tmp_path_factory):
    from lossforge.evaluation.rungs import FidelityConfig

    path = tmp_path_factory.mktemp("asha") / "a.db"
    LossSearch(task="tiny-blobs", storage=path, budget=18, seed=2, funnel=H.NO_LRP,
               fidelity=FidelityConfig("asha", min_steps=2, max_steps=18, eta=3),
               strategy_options={"batch_size": 9}).run().close()
    out = tmp_path_factory.mktemp("asha_report")
    return R.write_report(path, out, top=1), path


class _Table(HTMLParser):
    """The rows of the ``<table class="rungs">`` of a page."""

    def __init__(self):
        super().__init__()
        self.rows, self._on, self._cell = [], False, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._on = ("class", "rungs") in attrs
        elif self._on and tag == "tr":
            self.rows.append([])
        elif self._on and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._on = False
        elif self._on and tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_report_of_an_asha_study_shows_rungs(asha_report):
    index, path = asha_report
    store = Store.open(path, readonly=True)
    rows = store.rung_rows()
    store.close()
    assert rows and {r.steps for r in rows} <= {2, 6, 18}
    last = {}  # where each candidate stopped: its highest rung, counted independently here
    for r in rows:
        if r.rung >= last.get((r.generation, r.position), (-1, 0))[0]:
            last[(r.generation, r.position)] = (r.rung, r.steps)
    expected = {}
    for _, steps in last.values():
        expected[steps] = expected.get(steps, 0) + 1
    table = _Table()
    table.feed(index.read_text())
    assert table.rows[0] == ["rung steps", "stopped here"]
    assert {int(s): int(n) for s, n in table.rows[1:]} == expected
    assert 18 in expected, "no candidate reached the top rung: the test needs one"

    page = _Page()
    page.feed(index.read_text())
    assert "Multi-fidelity rungs" in page.headings
    assert "rungs.png" in [img["src"] for img in page.images]
    assert png_size(index.parent / "rungs.png") == (960, 540)

    data = R.read_study(path)
    top, curves = F.top_rung_curves(data["fidelity"])
    reached = sorted(k for k, (_, s) in last.items() if s == 18)
    assert top == 18 and sorted((c["generation"], c["position"]) for c in curves) == reached
    for c in curves:  # each curve is that candidate's rung results, in rung order
        mine = sorted((r.rung, r.steps, r.fitness) for r in rows
                      if (r.generation, r.position) == (c["generation"], c["position"])
                      and r.fitness is not None)
        assert c["steps"] == [m[1] for m in mine] and c["fitness"] == [m[2] for m in mine]
    finals = [c["fitness"][-1] for c in curves if c["steps"] and c["steps"][-1] == 18]
    assert finals == sorted(finals, reverse=True)  # best first
    fig = R.make_figures(data, top=0)["rungs"]
    curves_ax, bars_ax = fig.axes[:2]
    assert len([ln for ln in curves_ax.get_lines() if ln.get_zorder() >= 2]) == len(
        [c for c in curves if c["steps"]])
    assert [int(t.get_text()) for t in bars_ax.get_xticklabels()] == sorted(expected)
    assert [p.get_height() for p in bars_ax.patches] == [expected[s] for s in sorted(expected)]


def test_report_without_rungs_has_no_rung_section(written):
    index, _ = written
    assert "Multi-fidelity rungs" not in index.read_text()
    assert not (index.parent / "rungs.png").exists()
