"""Training throughput of ``lossforge.train`` against a plain hand-written PyTorch loop.

Both train the same model (the task's) on the same data with the same optimiser, batch size,
steps and loss module (the zoo's ``ce`` expression), so the ratio measures the overhead of our
training machinery; a third row shows the plain loop with the fused ``F.cross_entropy`` for
reference. Runs alternate so that machine noise hits all alike. Prints a table and, as the last
line, a JSON object with ``ratio`` (ours / plain samples per s, same loss).

    python benchmarks/proxy_training.py [--task digits] [--steps 300] [--repeats 3] [--quick]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from lossforge import tasks
from lossforge.training import train


def plain_loop(task, steps: int, seed: int, criterion=F.cross_entropy) -> float:
    """Seconds for a minimal loop: model, Adam, random minibatches, ``criterion``."""
    data = task.data()
    x, y = data.train.x, data.train.y
    torch.manual_seed(seed)
    model = task.make_model()
    opt = torch.optim.Adam(model.parameters(), lr=task.proxy.lr)
    gen = torch.Generator().manual_seed(seed)
    bs = task.proxy.batch_size
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (bs,), generator=gen)
        loss = criterion(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def ours(task, steps: int, seed: int) -> float:
    """Seconds of ``train``'s training loop (its ``wall_time``; no split is scored)."""
    return train(task, "ce", steps=steps, seed=seed, splits=()).wall_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.repeats = 100, 2
    task = tasks.get(args.task)
    task.data()
    from lossforge import zoo

    same_loss = zoo.get("ce").module()
    ours(task, 10, 0), plain_loop(task, 10, 0, same_loss)  # warm-up
    t_ours, t_plain, t_fused = [], [], []
    for r in range(args.repeats):
        t_ours.append(ours(task, args.steps, r))
        t_plain.append(plain_loop(task, args.steps, r, same_loss))
        t_fused.append(plain_loop(task, args.steps, r))
    n = args.steps * task.proxy.batch_size
    ours_sps, plain_sps, fused_sps = n / min(t_ours), n / min(t_plain), n / min(t_fused)
    print(f"task {args.task}: {args.steps} steps × batch {task.proxy.batch_size}, best of {args.repeats}")
    print(f"{'loop':<22}{'samples/s':>12}")
    print(f"{'lossforge.train':<22}{ours_sps:>12.0f}")
    print(f"{'plain PyTorch loop':<22}{plain_sps:>12.0f}")
    print(f"{'plain, F.cross_entropy':<22}{fused_sps:>12.0f}")
    print(f"ratio ours/plain: {ours_sps / plain_sps:.3f}")
    print(json.dumps({"task": args.task, "ours_samples_per_s": round(ours_sps, 1),
                      "plain_samples_per_s": round(plain_sps, 1),
                      "plain_fused_ce_samples_per_s": round(fused_sps, 1),
                      "ratio": round(ours_sps / plain_sps, 4)}))


if __name__ == "__main__":
    main()
