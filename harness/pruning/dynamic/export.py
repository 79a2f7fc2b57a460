"""The exported form of a fast dynamic network: per-input width choice as graph control flow.

``antidote_fast`` decides per input which pre-packed width each block (or each stage, option
``decide='stage'``) computes. Deployment runtimes (ONNX Runtime, OpenVINO) run an exported graph,
so the decision has to be in the graph, tensor-only, and the unchosen widths must not run:

- the decision is the same arithmetic as eager's (per-channel sums of the input, one product
  with the predictor, comparisons with the thresholds scaled by the spatial size, a count);
- the choice is a balanced tree of ``If`` nodes over the distinct widths (``ceil(log2 W)``
  branches taken per decision), each branch holding plain convolutions of its packed weights
  (a chain block's branch: each level's stages, ``fast_chain.py``).

:func:`exportable` returns a copy of the network in this form: TorchScript modules for the
deciding parts (so ``torch.onnx.export`` writes ``If`` nodes), plain modules elsewhere. It
decides once per call, for the whole batch, so it is exported for batch 1 only (the engines
refuse larger batches). Effective MACs are eager's: the same decisions on the same inputs.
``harness.engines.onnxruntime.export_onnx`` moves each branch's weights into its branch, which
lets ONNX Runtime pre-pack them (left as outer-scope values they were re-packed every call:
``benchmarks/bench_dynamic.py --engines-only`` measured 0.96 ms of control flow before, 0.11 ms
after, on ResNet-56 with stage decisions).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.harness.pruning.dynamic.fast_blocks import FastBasicBlock, FastStage
from prunebench.harness.pruning.dynamic.fast_chain import FastChainBlock

_ACT_CODES = {None: 0, "relu": 1, "relu6": 2}


def _activate(y: torch.Tensor, code: int) -> torch.Tensor:
    """``y`` through the activation of ``code`` (``_ACT_CODES``); a free function TorchScript
    compiles with the modules that call it."""
    if code == 1:
        return F.relu(y)
    if code == 2:
        return F.relu6(y)
    return y


class _Width(nn.Module):
    """One block at one packed width: conv-ReLU-conv, the shortcut, add, ReLU."""

    def __init__(self, block: FastBasicBlock, j: int) -> None:
        super().__init__()
        w1, b1, w2 = (getattr(block, n).detach().clone() for n in block._packed[j])
        self.register_buffer("w1", w1)
        self.register_buffer("b1", b1)
        self.register_buffer("w2", w2)
        self.register_buffer("b2", block.b2.detach().clone())
        self.stride, self.has_shortcut = block.stride, block.has_shortcut
        if self.has_shortcut:
            self.register_buffer("ws", block.ws.detach().clone())
            self.register_buffer("bs", block.bs.detach().clone())
        else:  # TorchScript needs the attributes on every instance
            self.register_buffer("ws", torch.empty(0))
            self.register_buffer("bs", torch.empty(0))

    def forward(self, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv2d(x, self.w1, self.b1, self.stride, 1))
        y = F.conv2d(h, self.w2, self.b2, 1, 1)
        sc = F.conv2d(x, self.ws, self.bs, self.stride) if self.has_shortcut else x
        return F.relu(y + sc)


class _ChainConv(nn.Module):
    """One stage of a chain block at one level: conv (packed weights) and its activation."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, geometry: tuple) -> None:
        super().__init__()
        stride, padding, dilation, depthwise, _, act = geometry
        self.register_buffer("w", w.detach().clone())
        self.register_buffer("b", b.detach().clone())
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.groups = int(w.shape[0]) if depthwise else 1
        self.act = _ACT_CODES[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activate(F.conv2d(x, self.w, self.b, self.stride, self.padding, self.dilation,
                                  self.groups), self.act)


class _ChainLevel(nn.Module):
    """A chain block (bottleneck, inverted residual) at one level: its stages, the residual."""

    def __init__(self, block: FastChainBlock, lv: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            _ChainConv(getattr(block, wn), getattr(block, bn), block.geometry[i])
            for i, (wn, bn) in enumerate(block._packed[lv])])
        self.residual, self.projection = block.residual, block.projection
        self.final_act = _ACT_CODES[block.final_act]
        if block.projection:
            self.register_buffer("ws", block.ws.detach().clone())
            self.register_buffer("bs", block.bs.detach().clone())
            self.sc_stride, self.sc_padding, self.sc_dilation = (
                list(v) for v in block.sc_geometry)
        else:  # TorchScript needs the attributes on every instance
            self.register_buffer("ws", torch.empty(0))
            self.register_buffer("bs", torch.empty(0))
            self.sc_stride, self.sc_padding, self.sc_dilation = [1, 1], [0, 0], [1, 1]

    def forward(self, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        y = x
        for conv in self.convs:
            y = conv(y)
        if self.residual:
            if self.projection:
                y = y + F.conv2d(x, self.ws, self.bs, self.sc_stride, self.sc_padding,
                                 self.sc_dilation)
            else:
                y = y + x
        return _activate(y, self.final_act)


class _Chain(nn.Module):
    """Several blocks, each at its width of one stage level."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = part(x, j)
        return x


class _Select(nn.Module):
    """Branch ``lo`` for ``j < split``, else ``hi`` (one ``If`` node)."""

    def __init__(self, lo: nn.Module, hi: nn.Module, split: int) -> None:
        super().__init__()
        self.lo, self.hi, self.split = lo, hi, split

    def forward(self, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if bool(j < self.split):
            return self.lo(x, j)
        return self.hi(x, j)


def _tree(branches: list[nn.Module], start: int = 0) -> nn.Module:
    """A balanced ``_Select`` tree over ``branches`` (branch ``i`` taken for ``j == start+i``)."""
    if len(branches) == 1:
        return branches[0]
    mid = len(branches) // 2
    return _Select(_tree(branches[:mid], start), _tree(branches[mid:], start + mid), start + mid)


class _Decided(nn.Module):
    """Decision (scores >= thresholds, counted, looked up) then the branch tree."""

    def __init__(self, pw: torch.Tensor, thr_hw: torch.Tensor, lut: torch.Tensor,
                 tree: nn.Module) -> None:
        super().__init__()
        # block: S scores (one per channel) against S thresholds; stage: one score against T
        self.register_buffer("pw", pw.detach().clone())  # (S, C) or (C,)
        self.register_buffer("thr_hw", thr_hw.detach().clone())
        self.register_buffer("lut", lut)  # count -> branch index
        self.tree = tree

    def choose(self, x: torch.Tensor) -> torch.Tensor:
        """The branch index for input ``x`` (batch 1)."""
        s = torch.matmul(self.pw, x.sum([2, 3])[0])
        return self.lut[(s >= self.thr_hw).sum()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tree(x, self.choose(x))


class _Fixed(nn.Module):
    """A part with a single branch: no decision at all."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x, torch.zeros((), dtype=torch.long))


def _branches(part: nn.Module, hw: int) -> tuple[list[nn.Module], tuple | None]:
    """A deciding part's branches and its decision ``(pw, thr_hw, lut)`` (``None``: one
    branch, nothing to decide)."""
    if isinstance(part, FastStage):
        levels = [tuple(b.widths[lv] for b in part) for lv in range(part.levels)]
        distinct = sorted(set(levels), key=levels.index)
        branches = [_Chain([_Width(b, levels.index(w)) for b in part]) for w in distinct]
        lut = torch.tensor([distinct.index(w) for w in levels], dtype=torch.long)
        return branches, ((part.pw, part.thr * hw, lut) if len(distinct) > 1 else None)
    if isinstance(part, FastChainBlock):
        branches = [_ChainLevel(part, lv) for lv in range(part.levels)]
        if not part.predict:
            return branches[:1], None
        return branches, (part.pw, part.thr * hw, torch.arange(part.levels))
    if not part.predict:
        return [_Width(part, 0)], None
    branches = [_Width(part, j) for j in range(len(part.widths))]
    return branches, (part.pw, part.thr * hw, torch.tensor(part.lut, dtype=torch.long))


def _form(part: nn.Module, x: torch.Tensor, fixed: bool) -> nn.Module:
    """The exported form of ``part`` for its input ``x``: the branch tree behind the decision,
    or (``fixed``) the one branch ``x`` takes, with no decision."""
    branches, decision = _branches(part, x.shape[2] * x.shape[3])
    if decision is None:
        return _Fixed(branches[0])
    if fixed:
        return _Fixed(branches[int(_Decided(*decision, _tree(branches)).choose(x))])
    return _script(_Decided(*decision, _tree(branches)))


def _script(module: nn.Module) -> nn.Module:
    """TorchScript of a deciding part: the form in which ``torch.onnx`` writes ``If`` nodes
    (``torch.jit.script`` warns that it is deprecated; its ONNX path is what is used here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


def exportable_reason(model: nn.Module) -> str | None:
    """``None`` when :func:`exportable` can express ``model``'s decisions, else why not."""
    info = getattr(model, "prunebench_dynamic", None)
    method = info.get("method") if isinstance(info, dict) else None
    if method != "antidote_fast":
        return (f"only antidote_fast's pre-packed widths are expressed as graph control flow; "
                f"{method or 'this dynamic network'} decides with per-input masks or gathers")
    if float(info.get("rows", 1.0)) < 1.0:
        return ("its row bands (option rows) are placed per input by slicing, which the export "
                "does not express; drop the rows option")
    if info.get("exec_mode") != "fast":
        return (f"exec_mode {info.get('exec_mode')!r} is a reference mode; export "
                "exec_mode 'fast'")
    return None


@torch.no_grad()
def exportable(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of the dynamic network ``model`` whose decisions are TorchScript control flow,
    for inputs shaped like ``example`` (batch 1); see the module doc."""
    return _rebuilt(model, example, fixed=False)


@torch.no_grad()
def fixed_widths(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` with every decision replaced by the branch input ``x`` takes: the same
    convolutions as the exported form runs for ``x``, without deciding. Timing it against
    :func:`exportable` on ``x`` gives what the decisions and branches themselves cost."""
    return _rebuilt(model, x, fixed=True)


def _rebuilt(model: nn.Module, x: torch.Tensor, fixed: bool) -> nn.Module:
    reason = exportable_reason(model)
    if reason is not None:
        raise ValueError(reason)
    net = copy.deepcopy(getattr(model, "model", model)).eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, (FastStage, FastChainBlock)) or (
                isinstance(m, FastBasicBlock) and not isinstance(_parent(net, name), FastStage)):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: seen.__setitem__(name, args[0].clone())))
    try:
        net(x[:1])
    finally:
        for h in hooks:
            h.remove()
    for name in sorted(seen, key=len, reverse=True):
        form = _form(net.get_submodule(name), seen[name], fixed)
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, form)
    return net


def _parent(net: nn.Module, name: str) -> nn.Module | None:
    if "." not in name:
        return None
    return net.get_submodule(name.rpartition(".")[0])
