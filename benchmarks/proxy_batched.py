"""Proxy training throughput: sequential ``train`` per candidate vs ``train_batched`` (K at once).

For each task, the same K candidate losses (the zoo's expression losses, then seeded random losses
of the AutoLoss-Zero space that pass the funnel's checks) are trained with the task's proxy
settings (``--steps`` shortens them), seed 0, val split scored: once one after the other with
:func:`lossforge.training.train` (what the proxy stage does without batching), once in chunks of
``--chunk`` with :func:`lossforge.training.stacked.train_batched`. Runs alternate (repeats
swap the order) so that noise from other processes hits both. Also reports the CPU time of this
process (less sensitive to other load on a shared machine) and whether the outcomes agree.

Prints a table and, as the last line, one JSON object with ``digits_speedup`` and
``shapes_seg_speedup`` (sequential wall time / batched wall time) and the per-second figures.

    python benchmarks/proxy_batched.py [--tasks digits,shapes-seg] [--candidates 16] [--chunk 16]
        [--steps N] [--repeats 1] [--threads 1] [--quick] [--roofline] [--profile]

``--roofline`` also times what bounds the ratio on a CPU: digits' costliest convolution, 16 copies
one at a time vs one grouped convolution, next to a large matrix product (the core's peak);
``--profile`` prints torch.profiler's operator table of one batched step of ``--chunk`` copies.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
import torch.nn.functional as F

from lossforge import search, tasks, zoo
from lossforge.evaluation.checks import Checks
from lossforge.evaluation.probes import task_probe
from lossforge.training.stacked import supports_batched, train_batched
from lossforge.expr import spaces
from lossforge.training import OK, train


def candidates(task, k: int, seed: int = 0) -> list[str]:
    """``k`` formulas: the zoo's expression losses, then random losses that pass the checks."""
    out = [e.formula for e in map(zoo.get, zoo.names())
           if e.expr is not None and e.expr.variables() <= task.variables]
    warnings.filterwarnings("ignore", category=UserWarning)  # the checks' probes may warn
    checks = Checks(task_probe(task, 8, 0))
    space = spaces.get("autoloss-zero", variables=sorted(task.variables - {"z"}))
    strategy = search.get("random", space, seed=seed)
    while len(out) < k:
        for expr in strategy.ask(32):
            why, oriented = checks.reason(expr)
            if not why and str(oriented) not in out:
                out.append(str(oriented))
    return out[:k]


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def sequential(task, losses, steps):
    return [train(task, f, steps=steps, seed=0, splits=("val",)) for f in losses]


def batched(task, losses, steps, chunk):
    out = []
    for i in range(0, len(losses), chunk):
        out += train_batched(task, losses[i:i + chunk], steps=steps, seed=0, splits=("val",))
    return out


def bench_task(name: str, k: int, chunk: int, steps: int | None, repeats: int) -> dict:
    task = tasks.get(name)
    task.data()
    if not supports_batched(task):
        raise SystemExit(f"task {name}: its model is not supported by train_batched")
    losses = candidates(task, k)
    steps = steps or task.proxy.steps
    train(task, losses[0], steps=2, splits=("val",)), train_batched(task, losses[:2], steps=2)  # warm-up
    t_seq, t_bat, c_seq, c_bat = [], [], [], []
    for r in range(repeats):
        order = ("seq", "bat") if r % 2 == 0 else ("bat", "seq")
        for which in order:
            if which == "seq":
                seq, wall, cpu = timed(lambda: sequential(task, losses, steps))
                t_seq.append(wall), c_seq.append(cpu)
            else:
                bat, wall, cpu = timed(lambda: batched(task, losses, steps, chunk))
                t_bat.append(wall), c_bat.append(cpu)
    metric = task.default_metric
    same_status = sum(a.status == b.status for a, b in zip(seq, bat))
    diffs = [abs(a.val[metric] - b.val[metric]) for a, b in zip(seq, bat)
             if a.status == b.status == OK]
    ts, tb = min(t_seq), min(t_bat)
    return {"task": name, "candidates": k, "chunk": chunk, "steps": steps,
            "seq_per_s": k / ts, "batched_per_s": k / tb, "speedup": ts / tb,
            "cpu_speedup": min(c_seq) / min(c_bat), "seq_s": ts, "batched_s": tb,
            "same_status": same_status, "invalid": sum(a.status != OK for a in seq),
            "max_metric_diff": max(diffs) if diffs else 0.0,
            "median_metric_diff": sorted(diffs)[len(diffs) // 2] if diffs else 0.0}


def roofline(k: int = 16, n: int = 64, reps: int = 20) -> dict:
    """What bounds batching on a CPU: the time of ``digits``' costliest layer (conv 16→32, 3×3,
    on ``(n, 16, 8, 8)``), forward + backward, for ``k`` copies run one after the other vs as one
    grouped convolution, next to a large matrix product (the core's practical peak)."""
    def per_call(fn) -> float:
        for _ in range(3):
            fn()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    peak = 2 * 1024 ** 3 / per_call(lambda: a @ b) / 1e9
    xs = [torch.randn(n, 16, 8, 8, requires_grad=True) for _ in range(k)]
    ws = [torch.randn(32, 16, 3, 3, requires_grad=True) for _ in range(k)]
    xg = torch.cat(xs, 1).detach().requires_grad_(True)
    wg = torch.cat(ws, 0).detach().requires_grad_(True)
    one_by_one = per_call(lambda: [F.conv2d(x, w, padding=1).sum().backward() for x, w in zip(xs, ws)])
    grouped = per_call(lambda: F.conv2d(xg, wg, padding=1, groups=k).sum().backward())
    flop = 3 * 2 * n * 8 * 8 * 32 * 16 * 9 * k  # forward + the two backward products
    return {"sgemm_gflops": peak, "sequential_conv_gflops": flop / one_by_one / 1e9,
            "grouped_conv_gflops": flop / grouped / 1e9, "grouped_vs_sequential": one_by_one / grouped}


def profile_step(name: str, k: int, rows: int = 8) -> str:
    """``torch.profiler``'s table of the operators of 5 training steps of ``k`` copies of the task's
    model in one batched pass (forward, a stand-in loss, backward), by self CPU time."""
    from torch.profiler import profile

    from lossforge.training.stacked import batched_engine
    from lossforge.training.stacked_forward import make_forward, stack_parameters

    task = tasks.get(name)
    model = task.seeded_model(0)
    params = stack_parameters(model, k, "cpu")
    forward = make_forward(model, batched_engine(task))
    x = task.data().train.x[:task.proxy.batch_size]

    def step():
        forward(params, x).square().mean().backward()

    for _ in range(3):
        step()
    with profile() as prof:
        for _ in range(5):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits,shapes-seg")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the task's)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="under a minute: few steps, 8 candidates")
    ap.add_argument("--roofline", action="store_true",
                    help="also time digits' conv layer: 16 copies one by one vs grouped, vs sgemm")
    ap.add_argument("--profile", action="store_true",
                    help="also print torch.profiler's top operators of one batched training step")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    roof = roofline(min(args.candidates, 16)) if args.roofline else None
    if args.profile:
        for name in args.tasks.split(","):
            print(f"{name}: one batched step of {args.chunk} copies, torch.profiler\n"
                  f"{profile_step(name, args.chunk)}")
    quick_steps = {"digits": 30, "shapes-seg": 4}
    rows = []
    for name in args.tasks.split(","):
        k, steps = args.candidates, args.steps
        if args.quick:
            k, steps = min(k, 8), steps or quick_steps.get(name, 20)
        rows.append(bench_task(name, k, min(args.chunk, k), steps, args.repeats))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); best of {args.repeats}; "
          "candidates/s = candidates / wall time of the whole set (training + val scoring)")
    head = (f"{'task':<12}{'K':>4}{'chunk':>6}{'steps':>6}{'seq/s':>9}{'batched/s':>11}"
            f"{'speedup':>9}{'cpu x':>7}{'same status':>13}{'max |Δmetric|':>15}")
    print(head)
    for r in rows:
        print(f"{r['task']:<12}{r['candidates']:>4}{r['chunk']:>6}{r['steps']:>6}"
              f"{r['seq_per_s']:>9.3f}{r['batched_per_s']:>11.3f}{r['speedup']:>8.2f}x"
              f"{r['cpu_speedup']:>6.2f}x{r['same_status']:>8}/{r['candidates']:<4}"
              f"{r['max_metric_diff']:>15.4f}")
    if roof:
        print(f"roofline: sgemm {roof['sgemm_gflops']:.1f} GFLOP/s; digits' conv layer, forward + "
              f"backward: {roof['sequential_conv_gflops']:.1f} GFLOP/s one copy at a time, "
              f"{roof['grouped_conv_gflops']:.1f} GFLOP/s as one grouped convolution "
              f"({roof['grouped_vs_sequential']:.2f}x)")
    summary = {"threads": torch.get_num_threads(),
               **({f"roofline_{key}": round(v, 3) for key, v in roof.items()} if roof else {})}
    for r in rows:
        key = r["task"].replace("-", "_")
        summary.update({f"{key}_speedup": round(r["speedup"], 3),
                        f"{key}_cpu_speedup": round(r["cpu_speedup"], 3),
                        f"{key}_seq_per_s": round(r["seq_per_s"], 4),
                        f"{key}_batched_per_s": round(r["batched_per_s"], 4),
                        f"{key}_steps": r["steps"], f"{key}_candidates": r["candidates"],
                        f"{key}_same_status": r["same_status"],
                        f"{key}_max_metric_diff": round(r["max_metric_diff"], 5)})
    for key in ("digits_speedup", "shapes_seg_speedup"):
        summary.setdefault(key, None)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
