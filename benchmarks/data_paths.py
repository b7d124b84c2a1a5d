"""Training step time with ``Dataset`` splits vs in-memory tensors (the fast path).

For each task, the same proxy training (the task's baseline loss, seed 0, ``--steps`` steps, no
split scored) runs on the task's own data in three forms:

* ``tensors``: the built-in in-memory splits (training indexes the tensors);
* ``dataset``: a map-style ``Dataset`` wrapping those same tensors, one ``__getitem__`` per item,
  batched through a ``DataLoader`` (:class:`lossforge.data.Split`);
* ``files``: a ``Dataset`` reading each item from its own file in a temporary folder (``.npy``:
  ``x`` and ``y`` per item; ``--format pt``: one ``torch.save`` file per item), as a data set on
  disk is read (each read opens files: ``np.load`` costs ~0.1–0.4 ms per file here);
* ``memmap``: the split stored as one ``.npy`` per field, opened with ``np.load(mmap_mode="r")``
  (data larger than memory, paged in by the OS), read a batch at a time by ``__getitems__``,
  which returns the stacked batch.

Runs alternate (each repeat rotates the order) so that noise from other processes hits all
alike; the table gives the best and median time per step over ``--repeats`` and the ratio of the
best to the tensors' best. Every run's wall time includes creating its ``DataLoader``.

    python benchmarks/data_paths.py [--tasks digits,shapes-seg] [--steps N] [--repeats 5]
        [--workers 0] [--format npy|pt] [--threads 1] [--quick]

Prints a table and, as the last line, one JSON object with ``{task}_{path}_ratio`` for task
``digits`` / ``shapes_seg`` and path ``dataset`` / ``files`` / ``memmap`` (time per step over the
tensors' time per step; the target is <= 1.3; ``null`` for a task not run), the CPU-time ratios,
the per-step milliseconds and the largest loss-curve difference to the tensors' run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lossforge import tasks
from lossforge.data import DataSplits, Split
from lossforge.tasks import Task
from lossforge.training import OK, train

VARIANTS = ("tensors", "dataset", "files", "memmap")


class TensorItems(Dataset):
    """The samples of an in-memory split, one item per ``__getitem__``."""

    def __init__(self, split: Split):
        self.x, self.y = split.x, split.y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class FileItems(Dataset):
    """Items stored one per file: ``{i}.x.npy`` + ``{i}.y.npy``, or ``{i}.pt`` holding ``(x, y)``."""

    def __init__(self, folder: Path, n: int, fmt: str):
        self.folder, self.n, self.fmt = folder, n, fmt

    @classmethod
    def write(cls, split: Split, folder: Path, fmt: str) -> "FileItems":
        folder.mkdir(parents=True)
        for i in range(len(split)):
            x, y = split.x[i], split.y[i]
            if fmt == "pt":
                torch.save((x.clone(), y.clone()), folder / f"{i}.pt")
            else:
                np.save(folder / f"{i}.x.npy", x.numpy())
                np.save(folder / f"{i}.y.npy", y.numpy())
        return cls(folder, len(split), fmt)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.fmt == "pt":
            return torch.load(self.folder / f"{i}.pt")
        return (torch.from_numpy(np.load(self.folder / f"{i}.x.npy")),
                torch.from_numpy(np.load(self.folder / f"{i}.y.npy")))


class MemmapItems(Dataset):
    """A split stored as ``x.npy`` and ``y.npy``, memory-mapped; items copied out on read."""

    def __init__(self, folder: Path):
        self.x = np.load(folder / "x.npy", mmap_mode="r")
        self.y = np.load(folder / "y.npy", mmap_mode="r")

    @classmethod
    def write(cls, split: Split, folder: Path) -> "MemmapItems":
        folder.mkdir(parents=True)
        np.save(folder / "x.npy", split.x.numpy())
        np.save(folder / "y.npy", split.y.numpy())
        return cls(folder)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.x[i])), torch.from_numpy(np.array(self.y[i]))

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``DataLoader``'s batched read: one fancy index per field (a copy), returned as the
        batch ``(x, y)`` itself (no per-item stacking)."""
        return torch.from_numpy(self.x[indices]), torch.from_numpy(self.y[indices])


class Wrapped(Task):
    """``base`` with its splits replaced by ``Dataset`` s (everything else delegated)."""

    def __init__(self, base: Task, splits: DataSplits, workers: int):
        self.base, self.splits = base, splits
        for attr in ("name", "kind", "num_classes", "ignore_index", "metrics", "default_metric",
                     "baseline", "slots"):
            setattr(self, attr, getattr(base, attr))
        self.proxy = base.proxy.with_(num_workers=workers)

    def data(self) -> DataSplits:
        return self.splits

    def make_model(self):
        return self.base.make_model()

    def seeded_model(self, seed: int):
        return self.base.seeded_model(seed)

    def predict(self, outputs):
        return self.base.predict(outputs)


def variants(name: str, folder: Path, fmt: str, workers: int) -> dict[str, Task]:
    base = tasks.get(name)
    d = base.data()
    wrap = DataSplits(*(TensorItems(s) for s in (d.train, d.val, d.test)), d.num_classes, d.name)
    files = DataSplits(FileItems.write(d.train, folder / name / "train", fmt),
                       *(TensorItems(s) for s in (d.val, d.test)), d.num_classes, d.name)
    memmap = DataSplits(MemmapItems.write(d.train, folder / name / "memmap"),
                        *(TensorItems(s) for s in (d.val, d.test)), d.num_classes, d.name)
    return {"tensors": base, "dataset": Wrapped(base, wrap, workers),
            "files": Wrapped(base, files, workers), "memmap": Wrapped(base, memmap, workers)}


def one_run(task: Task, steps: int) -> tuple[float, float, list[float]]:
    """(wall seconds, CPU seconds of this process, loss curve) of one training run."""
    wall, cpu = time.perf_counter(), time.process_time()
    r = train(task, task.baseline, steps=steps, seed=0, splits=())
    assert r.status == OK, r
    return time.perf_counter() - wall, time.process_time() - cpu, r.loss_curve


def bench_task(name: str, steps: int, repeats: int, folder: Path, fmt: str, workers: int) -> dict:
    runs = variants(name, folder, fmt, workers)
    for task in runs.values():  # warm-up: data loaded, kernels chosen, files in the page cache
        one_run(task, 2)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    curves = {}
    for r in range(repeats):
        for v in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
            w, c, curves[v] = one_run(runs[v], steps)
            wall[v].append(w), cpu[v].append(c)
    ms = {v: 1000 * min(wall[v]) / steps for v in VARIANTS}
    med = {v: 1000 * statistics.median(wall[v]) / steps for v in VARIANTS}
    cpu_ms = {v: 1000 * min(cpu[v]) / steps for v in VARIANTS}
    ref = curves["tensors"]
    return {"task": name, "steps": steps, "repeats": repeats, "ms": ms, "median_ms": med,
            "cpu_ms": cpu_ms, "ratio": {v: ms[v] / ms["tensors"] for v in VARIANTS},
            "cpu_ratio": {v: cpu_ms[v] / cpu_ms["tensors"] for v in VARIANTS},
            "max_curve_diff": {v: max(abs(a - b) for a, b in zip(ref, curves[v]))
                               for v in VARIANTS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits,shapes-seg")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per run (default: 200 digits, 40 shapes-seg)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the Dataset runs")
    ap.add_argument("--format", choices=("npy", "pt"), default="npy", help="files: one per item")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="a few seconds: few steps, 1 repeat")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    default_steps = {"digits": 200, "shapes-seg": 40}
    quick_steps = {"digits": 10, "shapes-seg": 2}
    rows = []
    with tempfile.TemporaryDirectory(prefix="lossforge-data-paths-") as tmp:
        for name in args.tasks.split(","):
            steps = args.steps or (quick_steps if args.quick else default_steps).get(name, 50)
            repeats = 1 if args.quick else args.repeats
            rows.append(bench_task(name, steps, repeats, Path(tmp), args.format, args.workers))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.workers} DataLoader worker(s), files as .{args.format}; ms per training step "
          f"(best / median of the repeats), ratio = best / tensors' best")
    print(f"{'task':<12}{'steps':>6}{'path':>9}{'ms/step':>9}{'median':>9}{'cpu ms':>8}"
          f"{'ratio':>8}{'cpu ratio':>10}{'max |Δloss|':>13}")
    for r in rows:
        for v in VARIANTS:
            print(f"{r['task']:<12}{r['steps']:>6}{v:>9}{r['ms'][v]:>9.3f}{r['median_ms'][v]:>9.3f}"
                  f"{r['cpu_ms'][v]:>8.3f}{r['ratio'][v]:>7.2f}x{r['cpu_ratio'][v]:>9.2f}x"
                  f"{r['max_curve_diff'][v]:>13.2e}")
    summary: dict = {"threads": torch.get_num_threads(), "workers": args.workers,
                     "format": args.format, "target_ratio": 1.3}
    for r in rows:
        key = r["task"].replace("-", "_")
        summary[f"{key}_steps"] = r["steps"]
        for v in VARIANTS:
            summary[f"{key}_{v}_ms_per_step"] = round(r["ms"][v], 4)
        for v in VARIANTS[1:]:
            summary[f"{key}_{v}_ratio"] = round(r["ratio"][v], 3)
            summary[f"{key}_{v}_cpu_ratio"] = round(r["cpu_ratio"][v], 3)
            summary[f"{key}_{v}_max_loss_diff"] = float(f"{r['max_curve_diff'][v]:.3g}")
    for task in ("digits", "shapes_seg"):
        for v in VARIANTS[1:]:
            summary.setdefault(f"{task}_{v}_ratio", None)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
