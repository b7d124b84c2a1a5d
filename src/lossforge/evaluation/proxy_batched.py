"""Batched proxy training: K copies of a task's small model, each trained with its own loss, in
one pass (DESIGN.md §5, stage 4; issue "Performance", item 2).

``train_batched(task, losses, steps=, seed=)`` returns one :class:`~lossforge.training.TrainResult`
per loss, the results :func:`lossforge.training.train` gives for each loss with that seed, up to
the order of floating-point sums. ``supports_batched(task)`` says whether the task's model can be
trained this way; the proxy stage (:class:`~lossforge.evaluation.proxy.ProxyTraining`, when it runs
in-process) uses :func:`in_process_results` to train its pending candidates in chunks.

How it works.

* **Model.** ``torch.manual_seed(seed)`` then ``task.make_model()``, as the sequential path does:
  every copy starts from the same initialisation. Its parameters are stacked into leaf tensors
  ``(K, *shape)``; one forward pass computes all K copies on the shared input minibatch, with one
  of two engines (:func:`batched_engine` picks the first that passes its probe):

  - ``"grouped"``: the model's ``torch.fx`` graph is run with every per-copy value stored as
    ``(N, K, *rest)`` — copies next to the channels, so a convolution of all copies is one grouped
    convolution (the first, on the shared input, one convolution with ``K × O`` filters), a
    GroupNorm one GroupNorm with ``K × G`` groups (bias and affine fused as in the sequential
    kernels), pooling/activations act on all copies at once, linear layers are batched matrix
    products. Knows the layers of the built-in models (convolutions and transposed convolutions,
    Linear, GroupNorm, pooling, activations, Flatten, Dropout, concatenation, element-wise
    arithmetic); anything else raises ``_Unsupported``.
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
  copy gets the values :func:`~lossforge.expr.kernels.prepare_classification` would give); other
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

import math
import operator
import time
import weakref
from typing import Iterable, Iterator, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from lossforge.evaluation.candidate import INVALID as STAGE_INVALID
from lossforge.evaluation.candidate import TRAINED
from lossforge.expr import Expr
from lossforge.expr import kernels as K
from lossforge.expr.export import ExprLoss, loss_value
from lossforge.loss_spec import LoadedLoss, load_loss
from lossforge.tasks import CLASSIFICATION, Task, check_output_shape
from lossforge.tasks import get as get_task
from lossforge.training import (INVALID, OK, TrainResult, batch_indices, make_optimizer,
                                seed_everything)

__all__ = ["DEFAULT_CHUNK", "ENGINES", "FAILED", "batched_engine", "in_process_results",
           "supports_batched", "train_batched"]

#: Default number of candidates the proxy stage trains together.
DEFAULT_CHUNK = 16
#: Status of a copy whose loss raised an exception during training (the sequential path raises).
FAILED = "failed"

_SUPPORT: "weakref.WeakKeyDictionary[Task, str | None]" = weakref.WeakKeyDictionary()

#: The two ways to run K copies of a model (see the module docstring).
ENGINES = ("grouped", "vmap")


def _stack(model: nn.Module, k: int, device) -> dict[str, torch.Tensor]:
    """The model's parameters repeated ``k`` times, as leaf tensors ``(k, *shape)``."""
    return {name: p.detach().to(device).unsqueeze(0).repeat(k, *([1] * p.dim()))
            .requires_grad_(p.requires_grad) for name, p in model.named_parameters()}


# ---- engine "vmap": torch.func over the model's own forward ------------------------------------
def _vmap_forward(model: nn.Module):
    """``f(stacked_params, x) -> (K, N, ...)``: the model's forward, vmapped over the parameters."""
    def one(params, x):
        return functional_call(model, params, (x,))

    return vmap(one, in_dims=(0, None), randomness="same")


# ---- engine "grouped": the traced graph, K copies side by side in every tensor ------------------
class _Unsupported(Exception):
    """The grouped engine cannot run this model (the vmap engine may)."""


class _G:
    """A value that differs between copies: tensor ``(N, K, *rest)`` where one copy's value is
    ``(N, *rest)``. Copies sit next to the channels, so ``t.flatten(1, 2)`` is the layout of a
    grouped convolution (copy-major channel blocks), without a copy."""

    __slots__ = ("t",)

    def __init__(self, t: torch.Tensor):
        self.t = t


def _grouped(x, k: int) -> _G:
    """A shared value (the input, or computed from it only) as a grouped one."""
    if isinstance(x, _G):
        return x
    return _G(x.unsqueeze(1).expand(x.shape[0], k, *x.shape[1:]))


def _cdim(d: int, nd: int) -> int:
    """A copy's dimension ``d`` (of ``nd``; not the batch) as the grouped tensor's dimension."""
    d = d % nd if nd else d
    if d == 0:
        raise _Unsupported("an operation over the batch dimension")
    return d + 1


def _conv(mod, name, x, P, k):
    if getattr(mod, "padding_mode", "zeros") != "zeros":
        raise _Unsupported("padding_mode")
    w, b = P[name + ".weight"], P.get(name + ".bias")
    bias = None if b is None else b.flatten()
    nd = w.dim() - 3
    transposed = isinstance(mod, nn.modules.conv._ConvTransposeNd)
    if transposed:
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
        if not isinstance(x, _G) and mod.groups == 1:  # shared input: one convolution, K*O outputs
            wt = w.transpose(0, 1).flatten(1, 2)
            out = fn(x, wt, bias, mod.stride, mod.padding, mod.output_padding, 1, mod.dilation)
        else:
            out = fn(_grouped(x, k).t.flatten(1, 2), w.flatten(0, 1), bias, mod.stride, mod.padding,
                     mod.output_padding, k * mod.groups, mod.dilation)
    else:
        fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        if not isinstance(x, _G) and mod.groups == 1:
            out = fn(x, w.flatten(0, 1), bias, mod.stride, mod.padding, mod.dilation, 1)
        else:
            out = fn(_grouped(x, k).t.flatten(1, 2), w.flatten(0, 1), bias, mod.stride, mod.padding,
                     mod.dilation, k * mod.groups)
    return _G(out.unflatten(1, (k, -1)))


def _linear(mod, name, x, P, k):
    w, b = P[name + ".weight"], P.get(name + ".bias")  # (K, O, F), (K, O)
    if not isinstance(x, _G):  # shared input: one matrix product with the K*O stacked rows
        out = F.linear(x, w.flatten(0, 1), None if b is None else b.flatten())
        return _G(out.unflatten(-1, (k, -1)).movedim(-2, 1))
    t = x.t.movedim(1, 0)  # (K, N, *mid, F)
    flat = t.reshape(k, -1, t.shape[-1])
    wt = w.transpose(1, 2)
    out = torch.bmm(flat, wt) if b is None else torch.baddbmm(b.unsqueeze(1), flat, wt)
    return _G(out.view(k, *t.shape[1:-1], -1).movedim(0, 1))


def _group_norm(mod, name, x, P, k):
    w, b = P.get(name + ".weight"), P.get(name + ".bias")
    out = F.group_norm(_grouped(x, k).t.flatten(1, 2), k * mod.num_groups,
                       None if w is None else w.flatten(), None if b is None else b.flatten(),
                       mod.eps)
    return _G(out.unflatten(1, (k, -1)))


def _per_channel(mod, name, x, P, k):
    """Pooling, upsampling: acts on each channel of each sample."""
    if not isinstance(x, _G):
        return mod(x)
    if x.t.dim() < 4:
        raise _Unsupported(f"{type(mod).__name__} on an input without channels")
    return _G(mod(x.t.flatten(1, 2)).unflatten(1, (k, -1)))


def _elementwise(mod, name, x, P, k):
    return _G(mod(x.t)) if isinstance(x, _G) else mod(x)


def _flatten(mod, name, x, P, k):
    if not isinstance(x, _G):
        return mod(x)
    nd = x.t.dim() - 1
    return _G(x.t.flatten(_cdim(mod.start_dim, nd), _cdim(mod.end_dim, nd)))


def _unflatten(mod, name, x, P, k):
    if not isinstance(x, _G):
        return mod(x)
    return _G(x.t.unflatten(_cdim(mod.dim, x.t.dim() - 1), mod.unflattened_size))


def _dropout(mod, name, x, P, k):
    """One mask of a copy's shape, shared by the copies: the draws of one sequential run."""
    if not mod.training or mod.p == 0:
        return x
    if not isinstance(x, _G):
        return mod(x)
    t = x.t
    noise = F.dropout(torch.ones((t.shape[0], *t.shape[2:]), dtype=t.dtype, device=t.device),
                      mod.p, True)
    return _G(t * noise.unsqueeze(1))


_MODULES = {
    **{c: _conv for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                          nn.ConvTranspose3d)},
    nn.Linear: _linear,
    nn.GroupNorm: _group_norm,
    **{c: _per_channel for c in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                                 nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                                 nn.AdaptiveMaxPool2d, nn.Upsample)},
    **{c: _elementwise for c in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
                                 nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus,
                                 nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                                 nn.Tanhshrink, nn.Identity)},
    nn.Flatten: _flatten,
    nn.Unflatten: _unflatten,
    nn.Dropout: _dropout,
}

_UNARY = {torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.abs, torch.neg, F.relu, F.gelu,
          F.silu, F.leaky_relu, F.elu, F.softplus, F.hardtanh, F.mish, F.relu6, operator.neg}
_BINARY = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
           torch.mul, torch.div, torch.maximum, torch.minimum}
_UNARY_METHODS = {"relu", "sigmoid", "tanh", "exp", "abs", "neg", "contiguous"}
_BINARY_METHODS = {"add", "sub", "mul", "div"}
_DIM_METHODS = {"squeeze", "unsqueeze", "softmax", "log_softmax", "mean", "sum", "amax", "amin"}
_SHAPE_METHODS = {"size", "dim", "flatten", "view", "reshape"}


def _has_tensor(values) -> bool:
    return any(isinstance(v, (_G, torch.Tensor)) for v in values)


def _align(a, b, k):
    """Operands of an element-wise op: a shared tensor with the batch dimension gets the copies'."""
    if isinstance(a, _G) and isinstance(b, torch.Tensor) and b.dim() >= a.t.dim() - 1:
        b = b.unsqueeze(1)
    return a.t if isinstance(a, _G) else a, b.t if isinstance(b, _G) else b


def _call(target, args, kwargs, k, method: bool):
    """A function or method of the traced graph on shared/grouped values."""
    vals = list(args) + list(kwargs.values())
    if not any(isinstance(v, _G) for v in vals) and not any(
            isinstance(v, (list, tuple)) and any(isinstance(u, _G) for u in v) for v in vals):
        return getattr(args[0], target)(*args[1:], **kwargs) if method else target(*args, **kwargs)
    x = args[0]
    if method and target in _UNARY_METHODS or not method and target in _UNARY:
        if _has_tensor(list(args[1:]) + list(kwargs.values())):
            raise _Unsupported("a tensor argument to a unary op")
        return _G(getattr(x.t, target)(*args[1:], **kwargs) if method else target(x.t, *args[1:], **kwargs))
    if method and target in _BINARY_METHODS or not method and target in _BINARY:
        if len(args) != 2 or _has_tensor(kwargs.values()):
            raise _Unsupported("binary op form")
        a, b = args
        if not isinstance(a, _G):
            b, a = _align(b, a, k)
        else:
            a, b = _align(a, b, k)
        return _G(getattr(a, target)(b, **kwargs) if method else target(a, b, **kwargs))
    if not method and target in (torch.cat, torch.concat):
        tensors = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        gs = [_grouped(t, k).t for t in tensors]
        nd = gs[0].dim() - 1
        d = dim % nd
        return _G(torch.cat(gs, dim=0 if d == 0 else d + 1))
    if not isinstance(x, _G):
        raise _Unsupported(f"{target} with a per-copy argument")
    t, nd = x.t, x.t.dim() - 1
    if method and target in _DIM_METHODS or not method and target in (torch.softmax, F.softmax,
                                                                          F.log_softmax):
        name = target if method else target.__name__
        dim = args[1] if len(args) > 1 else kwargs.pop("dim", None)
        if dim is None or _has_tensor(list(args[2:]) + list(kwargs.values())):
            raise _Unsupported(f"{name} without a dimension")
        dims = tuple(_cdim(d, nd) for d in dim) if isinstance(dim, (tuple, list)) else _cdim(dim, nd)
        return _G(getattr(t, name)(dims, *args[2:], **kwargs))
    if method and target == "size":
        size = torch.Size((t.shape[0], *t.shape[2:]))
        return size if len(args) == 1 else size[args[1]]
    if method and target == "dim":
        return nd
    if method and target == "flatten" or not method and target is torch.flatten:
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return _G(t.flatten(_cdim(start, nd), _cdim(end, nd)))
    if method and target in ("view", "reshape"):
        shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        if not shape or shape[0] != t.shape[0]:
            raise _Unsupported(f"{target} that does not keep the batch dimension first")
        return _G(t.reshape(t.shape[0], k, *shape[1:]))
    if not method and target is getattr and args[1] == "shape":
        return torch.Size((t.shape[0], *t.shape[2:]))
    raise _Unsupported(f"{target}")


class _GroupedForward:
    """``f(stacked_params, x) -> (K, N, ...)`` from the model's ``torch.fx`` graph: convolutions
    become grouped convolutions (the shared input's first one a single convolution with ``K × O``
    outputs), linear layers batched matrix products, GroupNorm a GroupNorm with ``K × G`` groups,
    pooling and activations act on all copies at once. ``_Unsupported`` for other graphs."""

    def __init__(self, model: nn.Module):
        try:
            graph = torch.fx.symbolic_trace(model).graph
        except Exception as err:  # not traceable (data-dependent control flow, ...)
            raise _Unsupported(f"torch.fx cannot trace the model: {err}") from None
        self.model, self.nodes = model, list(graph.nodes)
        self.modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        if sum(n.op == "placeholder" for n in self.nodes) != 1:
            raise _Unsupported("a forward with more than one input")
        for node in self.nodes:
            if node.op == "call_module":
                mod = self.modules[node.target]
                if type(mod) not in _MODULES or len(node.args) != 1 or node.kwargs:
                    raise _Unsupported(f"module {type(mod).__name__}")
                for pn, p in mod.named_parameters(recurse=False):
                    if params.get(f"{node.target}.{pn}") is not p:
                        raise _Unsupported("a parameter shared between modules")
            elif node.op == "get_attr":
                raise _Unsupported("a forward that reads attributes")
            elif node.op == "call_function" and not callable(node.target):
                raise _Unsupported(f"function {node.target}")

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k = next(iter(params.values())).shape[0]
        env: dict = {}
        load = lambda a: torch.fx.node.map_arg(a, lambda n: env[n])  # noqa: E731
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "call_module":
                mod = self.modules[node.target]
                env[node] = _MODULES[type(mod)](mod, node.target, load(node.args[0]), params, k)
            elif node.op in ("call_function", "call_method"):
                env[node] = _call(node.target, load(node.args), dict(load(node.kwargs)), k,
                                  node.op == "call_method")
            elif node.op == "output":
                out = load(node.args[0])
                if not isinstance(out, (_G, torch.Tensor)):
                    raise _Unsupported("a model output that is not one tensor")
                return _grouped(out, k).t.movedim(1, 0)
        raise _Unsupported("a graph without output")


def _make_forward(model: nn.Module, engine: str):
    if engine == "grouped":
        return _GroupedForward(model)
    if engine == "vmap":
        return _vmap_forward(model)
    raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = task.make_model()
            if _has_running_stats(model):
                return False
            before = {n: b.clone() for n, b in model.named_buffers()}
            params = _stack(model, 2, x.device)
            fwd = _make_forward(model, engine)
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
        for ld in loaded:
            fast = (task.kind == CLASSIFICATION and ld.expr is not None
                    and isinstance(ld.module, ExprLoss))
            self.exprs.append(ld.expr if fast else None)
            self.modules.append(None if fast else ld.module.to(device))
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
                  engine: str | None = None) -> list[TrainResult]:
    """Train one copy of the task's model per loss, all at once; one ``TrainResult`` per loss.

    The arguments mean what they mean for :func:`lossforge.training.train` (every copy uses
    ``seed``). A loss that cannot be loaded raises ``ValueError`` like ``train``; a loss that
    raises while training gets status :data:`FAILED` (``train`` would raise). The task's model must
    be supported (:func:`supports_batched`), else ``ValueError``. ``engine``: ``"grouped"`` or
    ``"vmap"`` (default: :func:`batched_engine`'s choice).
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
    gen = seed_everything(seed)
    x, y = data.train.x.to(dev), data.train.y.to(dev)
    model = task.make_model().to(dev)
    model.train()
    crit = _Losses(task, loaded, dev)
    n = len(loaded)
    results = [TrainResult(ld.name, seed, cfg.steps, 0, OK) for ld in loaded]
    params = _stack(model, n, dev)
    fwd = _make_forward(model, engine)
    opt = make_optimizer(list(params.values()), cfg)
    live = list(range(n))  # live[j]: the loss trained by row j of the stacked tensors
    start = time.perf_counter()
    bs = min(cfg.batch_size, len(x))
    for step, idx in enumerate(batch_indices(len(x), bs, cfg.steps, gen)):
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
        if rows and splits:
            _evaluate(task, model, fwd, params, rows, [results[live[j]] for j in rows], data,
                      splits, cfg, dev)
    wall = (time.perf_counter() - start) / n
    for r in results:
        r.wall_time = wall
    return results


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


# ---- the proxy stage's in-process path ----------------------------------------------------------
def in_process_results(task: Task, todo: list, args: list[tuple], chunk: int = DEFAULT_CHUNK
                       ) -> Iterator[tuple]:
    """``(candidate, job result)`` pairs for the proxy stage's in-process path, chunk by chunk.

    ``args[i]`` are :func:`~lossforge.evaluation.proxy.proxy_job`'s arguments for ``todo[i]``
    (task, formula, metric, steps, seed, device); results have the fields ``proxy_job`` returns.
    Candidates are trained with :func:`train_batched` in chunks of ``chunk`` when the task supports it,
    else (and for ``chunk <= 1``) one at a time through the sequential job. A loss that cannot be
    loaded, a copy that fails, or a chunk whose batched training raises goes through the
    sequential job, which gives the exact sequential outcome (status ``failed`` with its reason).
    """
    from lossforge.evaluation.proxy import _safe_job

    if chunk <= 1 or not todo or len(task.loss_slots()) > 1 or not supports_batched(task):
        for c, a in zip(todo, args):  # multi-slot tasks: always sequential (composite losses)
            yield c, _safe_job(a)
        return
    batchable, single = [], []
    for c, a in zip(todo, args):
        try:
            load_loss(a[1], task)
            batchable.append((c, a))
        except ValueError:
            single.append((c, a))
    for c, a in single:
        yield c, _safe_job(a)
    groups: dict[tuple, list] = {}  # same training settings -> one batched run
    for c, a in batchable:
        groups.setdefault(tuple(a[2:]), []).append((c, a))
    for key, items in groups.items():
        metric, steps, seed = key[:3]
        device = key[3] if len(key) > 3 else "cpu"
        m = task.metric(metric)
        for lo in range(0, len(items), chunk):
            part = items[lo:lo + chunk]
            yield from _chunk_results(task, part, m, metric, steps, seed, device, _safe_job)


def _chunk_results(task, part, m, metric, steps, seed, device, safe_job) -> Iterable[tuple]:
    try:
        results = train_batched(task, [a[1] for _, a in part], steps=steps, seed=seed,
                                device=device, splits=("val",))
    except (RuntimeError, ValueError, FloatingPointError):
        for c, a in part:
            yield c, safe_job(a)
        return
    for (c, a), r in zip(part, results):
        if r.status == FAILED:
            yield c, safe_job(a)
            continue
        ok = r.status == OK
        yield c, {"status": TRAINED if ok else STAGE_INVALID,
                  "fitness": m.sign * r.val[metric] if ok else None,
                  "metrics": r.val, "seconds": r.wall_time, "steps_done": r.steps_done}
