"""Drop a loss found by a search into your own training loop, and compare it with cross-entropy.

Takes a study file (its best loss, or ``--rank N``) or a formula, exports the loss as a
standalone PyTorch file (what ``lossforge export STUDY --rank N -o FILE`` writes; here through the
Python API: ``lossforge.parse(formula).to_source(name)``), imports that file as your project
would, and trains with its ``nn.Module`` in the loop of ``task.py`` (``VOCShapes.fit``), next to
``torch.nn.CrossEntropyLoss(ignore_index=255)`` with the same seeds. Prints the validation mIoU
and boundary F1 of both.

Run (from the repository root, after ``make_voc_folder.py`` and a search)::

    python examples/voc_segmentation/train_with_found_loss.py voc.db
    python examples/voc_segmentation/train_with_found_loss.py voc.db --rank 2 --steps 600 --seeds 3
    python examples/voc_segmentation/train_with_found_loss.py --formula "-sum_c(y * square(1 - p) * log(p))"

The data folder is read as in ``task.py`` (``--root``, else ``$LOSSFORGE_VOC_ROOT``, else
``examples/voc_segmentation/VOCshapes``).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

from torch import nn

import lossforge

sys.path.insert(0, str(Path(__file__).resolve().parent))
from task import VOCShapes  # noqa: E402  (this folder's task file)


def best_formula(study_path: str | Path, rank: int = 1) -> str:
    """The formula of hall-of-fame entry ``rank`` (1 = best) of the study at ``study_path``."""
    study = lossforge.load_study(study_path, readonly=True)
    try:
        hall = study.hall_of_fame
    finally:
        study.close()
    if not hall:
        raise SystemExit(f"{study_path} has no trained loss yet: run or resume the search first")
    if not 1 <= rank <= len(hall):
        raise SystemExit(f"--rank must be between 1 and {len(hall)}")
    return hall[rank - 1].formula


def export_loss(formula: str, path: Path, name: str = "FoundLoss") -> nn.Module:
    """Write ``formula`` as a standalone PyTorch file at ``path`` (class ``name``), import it
    as any module of your project and return an instance of the loss."""
    path.write_text(lossforge.parse(formula).to_source(name=name))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)()


def compare(task: VOCShapes, losses: dict[str, nn.Module], steps: int, seeds: list[int]
            ) -> dict[str, list[dict[str, float]]]:
    """Validation metrics of ``task.fit`` with each loss, once per seed."""
    return {label: [task.fit(loss, steps=steps, seed=seed) for seed in seeds]
            for label, loss in losses.items()}


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", help="study file of a search on task.py")
    parser.add_argument("--rank", type=int, default=1, help="hall-of-fame entry (1 = best)")
    parser.add_argument("--formula", help="a loss formula instead of a study")
    parser.add_argument("--root", help="the VOC-layout folder")
    parser.add_argument("--steps", type=int, default=None, help="training steps (task default)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per loss")
    parser.add_argument("--out", type=Path, default=Path("found_loss.py"),
                        help="where the exported loss file goes")
    args = parser.parse_args(argv)
    if (args.study is None) == (args.formula is None):
        parser.error("give a study file or --formula (one of them)")
    formula = args.formula or best_formula(args.study, args.rank)
    task = VOCShapes(root=args.root)
    steps = args.steps or task.proxy.steps
    found = export_loss(formula, args.out)
    print(f"loss: {formula}\nexported to {args.out}; training {steps} steps, {args.seeds} seed(s)")
    results = compare(task, {"found": found,
                             "cross-entropy": nn.CrossEntropyLoss(ignore_index=task.ignore_index)},
                      steps, list(range(args.seeds)))
    for label, runs in results.items():
        cells = []
        for metric in ("miou", "bf1"):
            values = [r[metric] for r in runs]
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            cells.append(f"val {metric} {statistics.fmean(values):.4f}{spread}")
        print(f"{label:14s} " + "   ".join(cells))
    return results


if __name__ == "__main__":
    main()
