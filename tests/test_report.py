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
