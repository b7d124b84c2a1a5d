"""The transfer panel in the HTML report (issue 18): a losses × settings table coloured by the
difference to CE, each cell with mean ± std and Welch p vs CE, the verdict and the setups the
recommended loss was checked under. A tiny study on three blobs, a 2 × 2 panel."""
import re

import pytest

import lfhelpers as H
from lossforge import report as R
from lossforge.report.panel import MAX_ALPHA, cell_colour
from lossforge.study import LossSearch
from lossforge.transfer import Setting, transfer_panel

SQUARE_INV = "square(inv(p * y))"


@pytest.fixture(scope="module")
def study_and_panel(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "s.db"
    LossSearch(task=H.TinyBlobs.name, storage=path, budget=20, seed=1, funnel=H.FAST).run().close()
    settings = [Setting("task", steps=25),
                Setting("sgd", optimizer="sgd", lr=0.1, momentum=0.9, steps=25)]
    panel = transfer_panel(path, seeds=2, settings=settings, tie_seeds=0, losses=[SQUARE_INV])
    return path, panel


def cells_of(html: str) -> list[list[str]]:
    """The rows (lists of raw <td> html) of the report's transfer panel table."""
    table = re.search(r'<table class="panel">(.*?)</table>', html, re.S).group(1)
    return [re.findall(r"<td[^>]*>.*?</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)
            if "<td" in row]


def test_report_shows_the_stored_panel(study_and_panel, tmp_path):
    path, panel = study_and_panel
    html = R.write_report(path, tmp_path / "out", top=0).read_text()
    assert "<h2>Transfer panel</h2>" in html
    rows = cells_of(html)
    assert len(rows) == 2 and all(len(r) == 3 + 2 for r in rows)  # rank, worst, loss + 2 settings
    by_loss = {re.sub("<.*?>", "", r[2]): r for r in rows}
    assert set(by_loss) == {SQUARE_INV, "ce"}
    for k, setting in enumerate(["task", "sgd"]):
        c = panel["cells"][setting][SQUARE_INV]
        td = by_loss[SQUARE_INV][3 + k]
        assert f"{c['mean']:.4f} ± {c['std']:.4f}" in td
        p = "—" if c["p"] is None else f"{c['p']:.3f}"
        assert f"(p={p})" in td and f"Δ {c['delta']:+.4f}" in td
        colour = cell_colour(c["delta"], max(abs(panel["cells"][s][SQUARE_INV]["delta"])
                                             for s in ("task", "sgd")), True)
        assert (f'background:{colour}' in td) if colour else "background" not in td
        ref_td = by_loss["ce"][3 + k]
        assert "background" not in ref_td and "Δ" not in ref_td
    assert panel["verdict"]["text"].split(":")[0] in html
    assert "Checked <code>" in html and "panel sgd (sgd lr 0.1 momentum 0.9, 25 steps)" in html


def test_report_without_a_panel_says_one_optimizer_only(tmp_path):
    path = tmp_path / "s.db"
    LossSearch(task=H.TinyBlobs.name, storage=path, budget=30, seed=1, funnel=H.FAST).run().close()
    html = R.write_report(path, tmp_path / "out", top=0).read_text()
    assert "<h2>Transfer panel</h2>" not in html
    assert "<h2>Setups checked</h2>" in html and "one optimizer only" in html


def test_cell_colour_scales_with_the_difference_and_follows_the_metric_direction():
    assert cell_colour(0.1, 0.1, True) == f"rgba(0,150,0,{MAX_ALPHA:g})"
    assert cell_colour(-0.05, 0.1, True) == "rgba(200,0,0,0.28)"  # 0.55 * 0.5 = 0.275 -> 0.28
    assert cell_colour(-0.05, 0.1, False) == "rgba(0,150,0,0.28)"  # lower is better
    assert cell_colour(0.0, 0.1, True) is None and cell_colour(None, 0.1, True) is None
    assert cell_colour(1e-5, 0.1, True) is None
