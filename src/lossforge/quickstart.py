"""``python -m lossforge.quickstart``: a first look at lossforge (placeholder for a short search).

For now it prints the zoo of known losses (name, formula, source) and checks the standalone export
end to end: the ``to_source`` file of Baikal, imported in a fresh ``python`` process, computes the
same loss as ``to_torch`` on random data. Exits with status 1 if the check fails.
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
    """A rich table of the zoo: name, formula (or the module class), source."""
    table = Table(title="lossforge zoo: known losses", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("formula")
    table.add_column("source", style="dim")
    for name in zoo.names():
        entry = zoo.get(name)
        formula = entry.formula if entry.formula is not None else (
            f"[italic]nn.Module {type(entry.module()).__name__}[/italic]")
        table.add_row(name, formula, entry.source)
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


def main() -> int:
    """Print the zoo, run the export check; 0 on success."""
    console = Console()
    console.print(zoo_table())
    got, expected = check_export("baikal")
    ok = abs(got - expected) <= 1e-12 * max(1.0, abs(expected))
    status = "[bold green]OK[/bold green]" if ok else "[bold red]FAILED[/bold red]"
    console.print(f"export check (baikal: to_source in a fresh python vs to_torch): "
                  f"{got:.12g} vs {expected:.12g} {status}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
