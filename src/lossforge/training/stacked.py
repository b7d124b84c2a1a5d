"""Batched proxy training: K copies of a task's small model, each trained with its own loss, in
one pass (DESIGN.md §5, stage 4; issue "Performance", item 2).

``train_batched(task, losses, steps=, seed=)`` returns one :class:`~lossforge.training.TrainResult`
per loss, the results :func:`lossforge.training.train` gives for each loss with that seed, up to
the order of floating-point sums. ``supports_batched(task)`` says whether the task's model can be
trained this way; the proxy stage (:class:`~lossforge.evaluation.proxy.ProxyTraining`, when it runs
in-process) trains its pending candidates with it in chunks
(:func:`~lossforge.evaluation.proxy.in_process_results`).

How it works.

* **Model.** ``task.seeded_model(seed)``, as the sequential path does:
  every copy starts from the same initialisation. Its parameters are stacked into leaf tensors
  ``(K, *shape)``; one forward pass computes all K copies on the shared input minibatch, with one
  of two engines (:mod:`~lossforge.training.stacked_forward`; :func:`batched_engine` picks the
  first that passes its probe):

  - ``"grouped"``: the model's ``torch.fx`` graph is run with every per-copy value stored as
    ``(N, K, *rest)`` — copies next to the channels, so a convolution of all copies is one grouped
    convolution (the first, on the shared input, one convolution with ``K × O`` filters), a
    GroupNorm one GroupNorm with ``K × G`` groups (bias and affine fused as in the sequential
    kernels), pooling/activations act on all copies at once, linear layers are batched matrix
    products. Knows the layers of the built-in models (convolutions and transposed convolutions,
    Linear, GroupNorm, pooling, activations, Flatten, Dropout, concatenation, element-wise
    arithmetic); anything else raises ``UnsupportedModelError``.
  - ``"vmap"``: ``torch.func.vmap`` over ``torch.func.functional_call`` of the model's own
    forward, parameters batched, input shared (``in_dims=(0, None)``). General, but its batching
    rules add layout copies and separate bias/affine passes: measured slower than ``"grouped"``
    (and than sequential training on shapes-seg), so it is the fallback.

  Buffers are shared, unbatched.
* **Batches.** The same generator (``seed + 1``) and :func:`~lossforge.training.batch_indices`:
  every copy sees the minibatch sequence of the sequential run, so one input batch serves all.
* **Losses.** Each copy's loss is its own expression evaluated on its slice of the stacked outputs.
  For expression losses of classification tasks, the target's one-hot encoding and mask are
  computed once per step and the softmax once for all copies (per-position operations, so each
  copy gets the values :func:`~lossforge.expr.kernels.prepare_classification` would give; ``log(p)``
  is the exact ``log_softmax`` of the copy's logits and ``q`` its loss module's prior); other
  losses (regression, modules such as Lovász-softmax) are called as modules on their slice. The
  loss values of the live copies are summed for one backward pass; the copies share no parameter,
  so each copy gets exactly its own gradient (the sum's derivative is 1 per term).
* **Optimiser.** ``torch.optim`` (:func:`~lossforge.training.make_optimizer`, the task's proxy
  settings) over the stacked tensors. Adam, SGD, momentum and weight decay are element-wise, so
  one optimiser over ``(K, *shape)`` tensors is K independent optimisers with the same step count.
* **Invalid copies.** A copy whose loss value is not finite stops there with status ``invalid``
  (the sequential early stop: its last optimiser step is not taken): its loss is left out of the
  sum, and the copy is removed from the stacked parameters and the optimiser state (compaction,
  exact copies of the other rows), so it can neither poison the others nor cost more compute. A
  copy whose parameters end non-finite is invalid too, as in the sequential path. A loss that
  raises gets status :data:`FAILED` (the stage re-runs it sequentially for the exact outcome).
* **Evaluation.** The trained copies predict each requested split together (eval mode, eval batch
  ``eval_batch_size // K``); each copy's predictions are scored with ``task.compute_metrics``.
* **Dropout**: one mask per dropout layer and step, of one copy's shape, shared by the copies and
  drawn from the global generator exactly like one sequential run draws it (``"grouped"`` draws it
  with ``F.dropout`` on ones of that shape; ``"vmap"`` uses ``randomness="same"``). A sequential
  run with the same seed draws that same sequence of masks (same generator state after
  ``make_model``, same draws per step), so every copy sees the masks its sequential run would;
  ``randomness="different"`` would give each copy fresh masks and lose that correspondence. The
  probe checks this (train-mode outputs equal the plain model's under the same seed).

Performance (``benchmarks/proxy_batched.py``, CPU). The proxy models are small but their
convolutions already run near the CPU's throughput one candidate at a time (oneDNN at ~30-40
GFLOP/s per core on digits' 16→32 3×3 convolution); batching cannot reduce that work. What it
removes is the per-operation overhead (Python, dispatcher, autograd, optimiser: large for MLP
tasks, ~20-30% of a digits step) and it turns many small kernels into few large ones, which
parallelise over cores (and a GPU) far better than the sequential path's small ones.

Limits. Models with running statistics (BatchNorm) or other state written during the forward pass
are not supported (``supports_batched`` is ``False``; the stage falls back to sequential
training); neither is ``train_fraction``. Results agree with the sequential ones to float noise:
the batched kernels (grouped convolution, batched matmul) sum in another order, and training
amplifies the difference a little over the steps (a validation sample or two may flip); a
candidate's numbers may also differ at that level with the other members of its chunk.
``TrainResult.wall_time`` is the chunk's time divided by its number of losses.
"""
from __future__ import annotations

import itertools
import math
import time
import weakref
from typing import Sequence

import torch
from torch import nn

from lossforge.expr import Expr
from lossforge.expr import kernels as K
from lossforge.expr.interpret import ExprLoss, loss_value
from lossforge.tasks import CLASSIFICATION, Task, check_output_shape
from lossforge.tasks import get as get_task
from lossforge.tasks.base import isolated_global_rng
from lossforge.training import (INVALID, OK, TrainResult, TrainState, _check_state,
                                batch_generator, batch_indices, make_optimizer)
from lossforge.training.loss_spec import LoadedLoss, load_loss
from lossforge.training.stacked_forward import ENGINES, make_forward, stack_parameters

__all__ = ["ENGINES", "FAILED", "batched_engine", "supports_batched", "train_batched"]

#: Status of a copy whose loss raised an exception during training (the sequential path raises).
FAILED = "failed"

_SUPPORT: "weakref.WeakKeyDictionary[Task, str | None]" = weakref.WeakKeyDictionary()

# ---- support probe ------------------------------------------------------------------------------
def _has_running_stats(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
               for m in model.modules())


def supports_batched(task: Task | str) -> bool:
    """Whether ``task``'s model trains correctly under :func:`train_batched` (cached per task).

    Probes the model on a few training samples, with the global random state left untouched:
    no running statistics; an engine's forward runs, matches the plain model in eval and in train
    mode (dropout masks included) and backpropagates. :func:`batched_engine` names the engine.
    """
    return batched_engine(task) is not None


def batched_engine(task: Task | str) -> str | None:
    """The engine :func:`train_batched` uses for ``task``: ``"grouped"`` when the model's graph
    has only the operations it knows, else ``"vmap"``; ``None`` when neither is correct."""
    task = get_task(task)
    try:
        return _SUPPORT[task]
    except (KeyError, TypeError):
        pass
    engine = next((e for e in ENGINES if _probe(task, e)), None)
    try:
        _SUPPORT[task] = engine
    except TypeError:  # a task object that cannot be weakly referenced: no cache
        pass
    return engine


def _probe(task: Task, engine: str) -> bool:
    try:
        x = task.data().train.x[:4]
        with isolated_global_rng():
            model = task.seeded_model(0)
            if _has_running_stats(model):
                return False
            before = {n: b.clone() for n, b in model.named_buffers()}
            params = stack_parameters(model, 2, x.device)
            fwd = make_forward(model, engine)
            for train_mode in (False, True):
                model.train(train_mode)
                torch.manual_seed(1)
                with torch.no_grad():
                    ref = model(x)
                torch.manual_seed(1)
                out = fwd(params, x)
                for j in range(2):
                    if out[j].shape != ref.shape or not torch.allclose(out[j], ref, rtol=1e-4, atol=1e-5):
                        return False
            out.float().sum().backward()
            if any(p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
                   for p in params.values()):
                return False
            if any(not torch.equal(b, before[n]) for n, b in model.named_buffers()):
                return False
        return True
    except Exception:  # an unsupported module or op: another engine, or sequential training
        return False


# ---- training -------------------------------------------------------------------------------
class _Losses:
    """Per-copy loss values on the stacked outputs, sharing what the copies have in common."""

    def __init__(self, task: Task, loaded: Sequence[LoadedLoss], device):
        self.task = task
        self.exprs: list[Expr | None] = []
        self.modules: list[nn.Module | None] = []
        self.priors: list[torch.Tensor | None] = []  # the class prior q of each ExprLoss
        for ld in loaded:
            fast = (task.kind == CLASSIFICATION and ld.expr is not None
                    and isinstance(ld.module, ExprLoss))
            self.exprs.append(ld.expr if fast else None)
            self.modules.append(None if fast else ld.module.to(device))
            self.priors.append(ld.module.prior if fast else None)
        self.need_p = any(e is not None and "p" in e.variables() for e in self.exprs)

    def values(self, out: torch.Tensor, target: torch.Tensor, live: list[int]) -> list:
        """``out (k, N, ...)`` for the live copies (``live[j]``: the loss of row ``j``); returns one
        scalar tensor per row, or the exception its loss raised."""
        env0 = mask = ps = None
        outs = out.unbind(0)  # one backward node for all rows (indexing would add K full zeros)
        if any(self.exprs[i] is not None for i in live):
            env0, mask = K.prepare_classification(outs[0].detach(), target, self.task.ignore_index)
            if self.need_p:
                ps = torch.softmax(out, dim=2).unbind(0)
        vals: list = []
        for j, i in enumerate(live):
            try:
                expr = self.exprs[i]
                if expr is not None:
                    env = {"y": env0["y"], "z": outs[j]}
                    if ps is not None:
                        env["p"] = ps[j]
                    if "q" in expr.variables():
                        env["q"] = K.prior_variable(self.priors[i], outs[j])
                    value = loss_value(expr, env, mask)
                else:
                    value = self.modules[i](outs[j], target)
                if not torch.is_tensor(value) or value.numel() != 1:
                    raise ValueError("a loss must return one value")
                vals.append(value.reshape(()))
            except (RuntimeError, ValueError, FloatingPointError) as err:
                vals.append(err)
        return vals


def _compact(params: dict[str, torch.Tensor], opt: torch.optim.Optimizer, keep: list[int], cfg):
    """Keep rows ``keep`` of the stacked parameters and of the optimiser state (exact copies)."""
    device = next(iter(params.values())).device
    rows = torch.tensor(keep, dtype=torch.long, device=device)
    new = {n: p.detach().index_select(0, rows).requires_grad_(p.requires_grad)
           for n, p in params.items()}
    new_opt = make_optimizer(list(new.values()), cfg)
    for old_p, new_p in zip(params.values(), new.values()):
        state = opt.state.get(old_p)
        if state:
            new_opt.state[new_p] = {
                key: (v.index_select(0, rows) if torch.is_tensor(v) and v.dim() > 0
                      and v.shape[0] == old_p.shape[0] else v)
                for key, v in state.items()}
    return new, new_opt


def train_batched(task: Task | str, losses: Sequence[Expr | str | nn.Module], *,
                  steps: int | None = None, seed: int = 0, device: str = "cpu",
                  splits: tuple[str, ...] = ("val",), batch_size: int | None = None,
                  lr: float | None = None, curve_every: int = 10,
                  engine: str | None = None, states: Sequence[TrainState | None] | None = None,
                  keep_state: bool = False) -> list[TrainResult]:
    """Train one copy of the task's model per loss, all at once; one ``TrainResult`` per loss.

    The arguments mean what they mean for :func:`lossforge.training.train` (every copy uses
    ``seed``). A loss that cannot be loaded raises ``ValueError`` like ``train``; a loss that
    raises while training gets status :data:`FAILED` (``train`` would raise). The task's model must
    be supported (:func:`supports_batched`), else ``ValueError``. ``engine``: ``"grouped"`` or
    ``"vmap"`` (default: :func:`batched_engine`'s choice).

    Continuation (multi-fidelity rungs, as ``train``'s ``state=`` / ``keep_state=``): ``states``
    gives each copy's start, :class:`~lossforge.training.TrainState` s with one ``seed`` and one
    ``steps_done`` (all ``None``: a fresh start; else ``ValueError``) — from ``train`` or from
    this function, interchangeably; ``keep_state=True`` returns each trained copy's end in
    ``TrainResult.state``, a state ``train`` can continue. Every copy's results then agree with
    one straight run of ``steps`` to float noise (as batched results always do).
    """
    task = get_task(task)
    if not losses:
        return []
    if engine is None:
        engine = batched_engine(task)
        if engine is None:
            raise ValueError(f"task {task.name!r}: its model cannot be trained batched "
                             "(supports_batched is False); use lossforge.training.train")
    cfg = task.proxy.with_(steps=steps, batch_size=batch_size, lr=lr)
    loaded = [load_loss(spec, task) for spec in losses]
    data = task.data()
    dev = torch.device(device)
    gen = batch_generator(seed)
    x, y = data.train.x.to(dev), data.train.y.to(dev)
    model = task.seeded_model(seed).to(dev)
    model.train()
    crit = _Losses(task, loaded, dev)
    n = len(loaded)
    first = _common_start(states, n, seed, cfg.steps)
    results = [TrainResult(ld.name, seed, cfg.steps, first, OK) for ld in loaded]
    fwd = make_forward(model, engine)
    if first:
        params, opt = _stacked_start(model, states, cfg, dev)
    else:
        params = stack_parameters(model, n, dev)
        opt = make_optimizer(list(params.values()), cfg)
    live = list(range(n))  # live[j]: the loss trained by row j of the stacked tensors
    start = time.perf_counter()
    bs = min(cfg.batch_size, len(x))
    batches = batch_indices(len(x), bs, cfg.steps, gen)
    for step, idx in itertools.islice(enumerate(batches), first, None):
        idx = idx.to(dev)
        xb, yb = x[idx], y[idx]
        out = fwd(params, xb)
        if step == 0:
            check_output_shape(task, out[0], yb)
        vals = crit.values(out, yb, live)
        tensors = [v for v in vals if torch.is_tensor(v)]
        host = torch.stack(tensors).detach().cpu().tolist() if tensors else []
        it = iter(host)
        keep, good = [], []
        for j, (i, v) in enumerate(zip(live, vals)):
            r = results[i]
            if not torch.is_tensor(v):
                r.status = FAILED
                continue
            value = next(it)
            if not math.isfinite(value):
                r.status = INVALID
                r.loss_curve.append(float("nan"))
                continue
            keep.append(j)
            good.append(v)
            r.steps_done = step + 1
            if step % curve_every == 0:
                r.loss_curve.append(value)
        if good:
            opt.zero_grad(set_to_none=True)
            torch.stack(good).sum().backward()
            opt.step()
        if len(keep) < len(live):
            if not keep:
                live = []
                break
            params, opt = _compact(params, opt, keep, cfg)
            live = [live[j] for j in keep]
    if live:
        finite = torch.ones(len(live), dtype=torch.bool, device=dev)
        for p in params.values():
            finite &= torch.isfinite(p.detach().reshape(len(live), -1)).all(dim=1)
        for j, ok in enumerate(finite.tolist()):
            if not ok:
                results[live[j]].status = INVALID
        rows = [j for j, ok in enumerate(finite.tolist()) if ok]
        if keep_state:  # before scoring: eval passes draw no random numbers
            rng = torch.get_rng_state()
            for j in rows:
                results[live[j]].state = _copy_state(model, params, opt, j, seed,
                                                     results[live[j]].steps_done, rng)
        if rows and splits:
            _evaluate(task, model, fwd, params, rows, [results[live[j]] for j in rows], data,
                      splits, cfg, dev)
    wall = (time.perf_counter() - start) / n
    for r in results:
        r.wall_time = wall
    return results


def _common_start(states, n: int, seed: int, steps: int) -> int:
    """The step every copy starts from (0 without states); ``ValueError`` unless the states are
    ``n`` and share one seed and one ``steps_done`` (or are all ``None``)."""
    if states is None or all(st is None for st in states):
        return 0
    if len(states) != n or any(st is None for st in states):
        raise ValueError(f"states: one TrainState per loss ({n}), all given or all None")
    done = {(st.seed, st.steps_done) for st in states}
    if len(done) > 1:
        raise ValueError(f"states: copies trained together start from one seed and step, got "
                         f"{sorted(done)}; group them by steps_done")
    return _check_state(states[0], seed, steps)


def _stacked_start(model: nn.Module, states, cfg, dev):
    """Stacked parameters and optimiser continuing ``states`` (row i from ``states[i]``; the
    optimiser's per-parameter tensors stacked likewise, its step counts shared). Loads the shared
    buffers and torch's global RNG state from the first state (the copies drew the same numbers:
    one dropout mask per step for all of them)."""
    model.load_state_dict(states[0].model)
    torch.set_rng_state(states[0].rng)
    params = {name: torch.stack([st.model[name] for st in states]).to(dev)
              .requires_grad_(p.requires_grad) for name, p in model.named_parameters()}
    opt = make_optimizer(list(params.values()), cfg)
    saved = [st.optimizer["state"] for st in states]
    for i, (name, p) in enumerate(params.items()):
        per_copy = [sv.get(i, sv.get(str(i))) for sv in saved]
        if not per_copy[0]:
            continue
        opt.state[p] = {key: _stacked_value([pc[key] for pc in per_copy], dev)
                        for key in per_copy[0]}
    return params, opt


def _stacked_value(values: list, dev):
    """One optimiser state entry of every copy as the stacked optimiser's: per-parameter tensors
    stacked, a shared scalar (Adam's step count) copied — never aliased: the optimiser updates it
    in place, and the given states must stay as they were."""
    v = values[0]
    if torch.is_tensor(v) and v.dim() > 0:
        return torch.stack(values).to(dev)
    return v.clone() if torch.is_tensor(v) else v


def _copy_state(model: nn.Module, params: dict[str, torch.Tensor], opt, row: int, seed: int,
                steps_done: int, rng: torch.Tensor) -> TrainState:
    """Row ``row`` of the stacked training as the :class:`~lossforge.training.TrainState` of one
    sequential run (the model's state dict, the optimiser's in ``torch.optim`` layout)."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for name, p in params.items():
        sd[name] = p.detach()[row].cpu().clone()
    full = opt.state_dict()
    state = {i: {key: (v[row].detach().cpu().clone() if torch.is_tensor(v) and v.dim() > 0
                       else (v.detach().cpu().clone() if torch.is_tensor(v) else v))
                 for key, v in per.items()}
             for i, per in full["state"].items()}
    return TrainState(seed, steps_done, sd, {"state": state,
                                             "param_groups": full["param_groups"]}, rng.clone())


@torch.no_grad()
def _evaluate(task, model, fwd, params, rows, results, data, splits, cfg, dev) -> None:
    """Score rows ``rows`` of the stacked model on each split (eval mode), into ``results``."""
    model.eval()
    try:
        if len(rows) < next(iter(params.values())).shape[0]:
            index = torch.tensor(rows, dtype=torch.long, device=dev)
            params = {k: v.index_select(0, index) for k, v in params.items()}
        ebs = max(1, cfg.eval_batch_size // len(rows))
        for name in splits:
            split = getattr(data, name)
            preds: list[list[torch.Tensor]] = [[] for _ in rows]
            for i in range(0, len(split.x), ebs):
                out = fwd(params, split.x[i:i + ebs].to(dev))
                for j in range(len(rows)):
                    preds[j].append(task.predict(out[j]).cpu())
            target = split.y.numpy()
            for j, r in enumerate(results):
                setattr(r, name, task.compute_metrics(torch.cat(preds[j]).numpy(), target))
    finally:
        model.train()
