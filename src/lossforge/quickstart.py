"""``python -m lossforge.quickstart`` (``make quickstart``): a short real loss search, end to end.

1. prints the zoo of known losses;
2. searches the AutoLoss-Zero space from scratch on ``digits`` for accuracy (a few minutes on
   2 CPU cores), storing the study in ``out/quickstart.db``;
3. prints the funnel and the hall of fame, the best loss next to cross-entropy (the task's
   baseline) trained with the same proxy settings and seed, and exports the best loss to
   ``out/searched_loss.py``;
4. trains a model with the exported file in a fresh interpreter that cannot import lossforge (a
   plain PyTorch script), and checks the export matches ``to_torch`` numerically.
Exits with status 1 if a check fails.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lossforge import zoo
from lossforge.expr import parse

_RUNNER = textwrap.dedent(
    """
    import importlib.util, sys
    sys.modules["lossforge"] = None  # the exported file must not need lossforge
    import torch
    spec = importlib.util.spec_from_file_location("exported_loss", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    logits, target = torch.load(sys.argv[2])
    print(float(getattr(mod, sys.argv[3])()(logits, target)).hex())
    """
)


def zoo_table() -> Table:
    """A rich table of the zoo: name, loss kind, formula (or the module class), source; a name
    with a form per kind (``mse``) has one row per form."""
    table = Table(title="lossforge zoo: known losses", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("formula")
    table.add_column("source", style="dim")
    for entry in zoo.entries():
        formula = entry.formula if entry.formula is not None else (
            f"[italic]nn.Module {type(entry.module()).__name__}[/italic]")
        table.add_row(entry.name, entry.kind, formula, entry.source)
    return table


def check_export(name: str = "baikal", seed: int = 0) -> tuple[float, float]:
    """Export zoo loss ``name`` with ``to_source``, run it in a fresh interpreter on random data.

    Returns ``(value in the subprocess, value of to_torch)``; raises ``RuntimeError`` if the
    subprocess fails.
    """
    expr = zoo.get(name).expr
    if expr is None:
        raise ValueError(f"zoo entry {name!r} is not an expression")
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 5, 6, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (4, 6, 6), generator=gen)
    target[0, :2] = 255
    expected = float(expr.to_torch()(logits, target))
    with tempfile.TemporaryDirectory() as tmp:
        src, data, runner = Path(tmp, "exported_loss.py"), Path(tmp, "data.pt"), Path(tmp, "run.py")
        src.write_text(expr.to_source("ExportedLoss"))
        torch.save((logits, target), data)
        runner.write_text(_RUNNER)
        proc = subprocess.run([sys.executable, str(runner), str(src), str(data), "ExportedLoss"],
                              capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"the exported module failed in a fresh interpreter:\n{proc.stderr}")
    return float.fromhex(proc.stdout.strip().splitlines()[-1]), expected


_TRAIN_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys
    sys.modules["lossforge"] = None  # a plain PyTorch script: the exported file stands alone
    import torch
    spec = importlib.util.spec_from_file_location("searched_loss", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x, y, xt, yt = torch.load(sys.argv[2])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    criterion = mod.SearchedLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        idx = torch.randint(0, len(x), (64,))
        loss = criterion(model(x[idx]), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    acc = (model(xt).argmax(1) == yt).float().mean().item()
    print(acc)
    """
)


def run_search(out: Path, budget: int, console: Console):
    """The quickstart search: AutoLoss-Zero on digits; returns the Study."""
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.evaluation.lrp import LRPConfig
    from lossforge.evaluation.proxy import ProxyStageConfig
    from lossforge.study import LossSearch

    path = out / "quickstart.db"
    for stale in out.glob("quickstart.db*"):
        stale.unlink()
    funnel = FunnelConfig(lrp=LRPConfig(steps=100), proxy=ProxyStageConfig(steps=100))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        job = bar.add_task("searching", total=budget)

        def progress(state):
            bar.update(job, completed=state["explored"],
                       description=f"searching (generation {state['generation']})")

        return LossSearch(task="digits", metric="accuracy", strategy="autoloss-zero",
                          budget=budget, seed=0, storage=path, funnel=funnel,
                          strategy_options={"batch_size": 40, "population_size": 20, "remove": "worst"},
                          progress=progress).run()


def train_with_export(path: Path) -> float:
    """Test accuracy of a plain PyTorch MLP trained on digits with the exported loss file."""
    from lossforge.data import digits

    d = digits(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        data, runner = Path(tmp, "data.pt"), Path(tmp, "train.py")
        torch.save((d.train.x, d.train.y, d.test.x, d.test.y), data)
        runner.write_text(_TRAIN_SCRIPT)
        proc = subprocess.run([sys.executable, str(runner), str(path), str(data)],
                              capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"training with the exported loss failed:\n{proc.stderr}")
    return float(proc.stdout.strip().splitlines()[-1])


def main(budget: int = 400) -> int:
    """Zoo, export check, a short search, export of the best loss and a training with it."""
    from lossforge.cli.tables import print_study
    from lossforge.evaluation.baseline import describe

    console = Console()
    console.print(zoo_table())
    got, expected = check_export("baikal")
    if abs(got - expected) > 1e-12 * max(1.0, abs(expected)):
        console.print(f"[red]export check FAILED[/]: {got!r} != {expected!r}")
        return 1
    console.print("export check OK: the standalone Baikal module matches to_torch")
    out = Path("out")
    out.mkdir(exist_ok=True)
    study = run_search(out, budget, console)
    print_study(study.summary(top=5))
    best = study.best
    if best is None:
        console.print("[red]no candidate passed the funnel[/]")
        return 1
    exported = out / "searched_loss.py"
    exported.write_text(parse(best.formula, strict=False).to_source("SearchedLoss"))
    console.print(f"best loss: [bold]{best.formula}[/] (validation accuracy {best.fitness:.4f})")
    console.print(describe(study.baseline, best.fitness) + " (same proxy training, same seed)",
                  markup=False)
    console.print(f"exported to {exported}")
    acc = train_with_export(exported)
    console.print(f"a plain PyTorch MLP trained with {exported} reaches test accuracy {acc:.4f}")
    return 0 if acc > 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
