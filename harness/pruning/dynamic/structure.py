"""The structure dynamic pruning reads from a network's module graph (``torch.fx``).

Nothing here knows prunebench's own classes: a network is traced symbolically (a part that
cannot be traced as a whole, e.g. one with data-dependent control flow, has its children traced
one by one, so nothing crosses that part's boundary) and two patterns are read from the graph:

- a **site** (:func:`graph_sites`): a convolution -> BatchNorm -> ReLU/ReLU6 (-> max/avg pool)
  whose output has exactly one reader, a convolution with ``groups == 1`` (the *consumer*),
  possibly through channel-wise depthwise convolutions, BatchNorms and activations (the
  *follow* chain: MobileNetV2's expand output feeds the depthwise conv, whose output feeds the
  project conv; its channels shrink with the gate). Every node on the way has one reader, so
  a map that also feeds a residual add or a second branch is never a site;
- a **block** (:func:`match_block`): a module whose forward is a chain of ``conv -> BN
  [-> act]`` stages from its input, optionally added to its input or to ``BN(conv(input))``
  (the shortcut), optionally followed by one activation: CIFAR and torchvision ResNet basic
  blocks, torchvision bottlenecks, MobileNetV2 inverted residuals (and their ``conv``
  sequences).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6"}
_ACT_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu"}
_ADDS = (operator.add, operator.iadd, torch.add)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def activate(x: torch.Tensor, kind: str | None) -> torch.Tensor:
    """``x`` through the activation ``kind`` (``relu``, ``relu6``; ``None``: unchanged)."""
    if kind == "relu":
        return F.relu(x)
    if kind == "relu6":
        return F.relu6(x)
    return x


def traced(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module, fx.Graph]]:
    """``(prefix, module, graph)`` for ``model`` traced as a whole, or for its children traced
    one by one (recursively) where the whole cannot be traced."""
    try:
        return [(prefix, model, fx.symbolic_trace(model).graph)]
    except Exception:  # any tracing failure: its parts are read instead, never across them
        out = []
        for name, child in model.named_children():
            out += traced(child, _join(prefix, name))
        return out


class _Graph:
    """One traced graph with its modules, answering the questions the patterns ask."""

    def __init__(self, prefix: str, root: nn.Module, graph: fx.Graph) -> None:
        self.prefix, self.graph = prefix, graph
        self.mods = dict(root.named_modules())
        self.calls: dict[str, int] = {}
        for n in graph.nodes:
            if n.op == "call_module":
                self.calls[n.target] = self.calls.get(n.target, 0) + 1

    def mod(self, node: fx.Node | None) -> nn.Module | None:
        return self.mods.get(node.target) if node is not None and node.op == "call_module" \
            else None

    def name(self, node: fx.Node) -> str:
        return _join(self.prefix, str(node.target))

    @staticmethod
    def only_user(node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def act_kind(self, node: fx.Node | None) -> str | None:
        if node is None:
            return None
        if node.op == "call_module":
            return _ACT_MODULES.get(type(self.mod(node)))
        if node.op == "call_function":
            return _ACT_FUNCTIONS.get(node.target)
        if node.op == "call_method":
            return _ACT_METHODS.get(node.target)
        return None

    def conv(self, node: fx.Node | None) -> nn.Conv2d | None:
        m = self.mod(node)
        return m if isinstance(m, nn.Conv2d) else None

    def bn(self, node: fx.Node | None) -> nn.BatchNorm2d | None:
        m = self.mod(node)
        return m if isinstance(m, nn.BatchNorm2d) else None


@dataclass(frozen=True)
class RawSite:
    """A site as the graph shows it (see the module doc); ``act`` is set when the gate has to
    be the BN because the activation is shared or functional (the gate then applies it)."""

    producer: str
    gate: str
    act: str
    follow: tuple[str, ...]
    consumer: str
    channels: int


def _site_from(g: _Graph, node: fx.Node) -> RawSite | None:
    conv = g.conv(node)
    bn_node = g.only_user(node)
    if conv is None or g.bn(bn_node) is None:
        return None
    act_node = g.only_user(bn_node)
    kind = g.act_kind(act_node)
    if kind is None:
        return None
    last = act_node
    pool_node = g.only_user(act_node)
    if isinstance(g.mod(pool_node), _POOLS):
        last = pool_node
    if last.op == "call_module" and g.calls[last.target] == 1:
        gate, act = g.name(last), ""
    elif last is act_node and g.calls[bn_node.target] == 1:
        gate, act = g.name(bn_node), kind  # a shared or functional activation: gate the BN
    else:
        return None
    c = conv.out_channels
    follow: list[str] = []
    nxt = g.only_user(last)
    while nxt is not None:
        m = g.conv(nxt)
        if m is not None and m.groups == 1 and m.in_channels == c:
            return RawSite(g.name(node), gate, act, tuple(follow), g.name(nxt), c)
        if m is not None and m.groups == m.in_channels == m.out_channels == c:
            follow.append(g.name(nxt))
        elif not (g.bn(nxt) is not None or g.act_kind(nxt) is not None):
            return None
        nxt = g.only_user(nxt)
    return None


def graph_sites(model: nn.Module) -> list[RawSite]:
    """Every site of ``model`` in graph order (a conv may be one site's consumer and the next
    one's producer; a depthwise conv in a follow chain is never a producer)."""
    sites: list[RawSite] = []
    for prefix, root, graph in traced(model):
        g = _Graph(prefix, root, graph)
        followed: set[str] = set()
        for node in graph.nodes:
            if node.op != "call_module" or g.name(node) in followed:
                continue
            site = _site_from(g, node)
            if site is not None:
                sites.append(site)
                followed.update(site.follow)
    return sites


@dataclass(frozen=True)
class Stage:
    """One ``conv -> BN [-> act]`` stage of a block (module names relative to the block)."""

    conv: str
    bn: str
    act: str | None


@dataclass(frozen=True)
class BlockSpec:
    """A block's chain: its stages from the input, its shortcut (``None``: no residual add;
    ``()``: the input itself; ``(conv, bn)``: a projection of the input) and the activation
    after the add (or after the chain)."""

    stages: tuple[Stage, ...]
    shortcut: tuple[str, ...] | None
    final_act: str | None


def _chain(g: _Graph, end: fx.Node, start: fx.Node) -> list[Stage] | None:
    """The stages from ``start`` (the block input) to ``end`` (a BN or an activation)."""
    stages: list[Stage] = []
    node = end
    act = None
    while node is not start:
        kind = g.act_kind(node)
        if kind is not None:
            act, node = kind, node.args[0]
        bn_node = node
        if g.bn(bn_node) is None or not isinstance(bn_node.args[0], fx.Node):
            return None
        conv_node = bn_node.args[0]
        if g.conv(conv_node) is None or len(conv_node.users) != 1 or len(bn_node.users) != 1:
            return None
        stages.append(Stage(str(conv_node.target), str(bn_node.target), act))
        act = None
        node = conv_node.args[0]
        if not isinstance(node, fx.Node):
            return None
        if node is not start and len(node.users) != 1:
            return None
    return stages[::-1] or None


def _match(g: _Graph) -> BlockSpec | None:
    inputs = [n for n in g.graph.nodes if n.op == "placeholder"]
    outputs = [n for n in g.graph.nodes if n.op == "output"]
    if len(inputs) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return None
    x, out = inputs[0], outputs[0].args[0]
    final = g.act_kind(out)
    if final is not None:
        out = out.args[0]
    is_add = (out.op == "call_function" and out.target in _ADDS) or \
        (out.op == "call_method" and out.target in ("add", "add_"))
    if not is_add:
        stages = _chain(g, out, x)
        return BlockSpec(tuple(stages), None, final) if stages and len(stages) >= 2 else None
    if len(out.args) != 2 or out.kwargs or not all(isinstance(a, fx.Node) for a in out.args):
        return None
    for branch, short in (out.args, out.args[::-1]):
        stages = _chain(g, branch, x)
        if stages is None or len(stages) < 2 or stages[-1].act is not None:
            continue
        if isinstance(g.mod(short), nn.Identity):
            short = short.args[0]
        if short is x:
            return BlockSpec(tuple(stages), (), final)
        proj = _chain(g, short, x)
        if proj is not None and len(proj) == 1 and proj[0].act is None:
            return BlockSpec(tuple(stages), (proj[0].conv, proj[0].bn), final)
    return None


def match_block(module: nn.Module) -> BlockSpec | None:
    """``module``'s chain (:class:`BlockSpec`) when its forward is one, else ``None``."""
    if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or not list(module.children()):
        return None
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception:  # a module that cannot be traced is not a block we can rebuild
        return None
    return _match(_Graph("", module, graph))


def enclosing_block(model: nn.Module, names: list[str], memo: dict | None = None
                    ) -> tuple[str, BlockSpec] | None:
    """The nearest ancestor of every module in ``names`` that is a block, or ``None``. A block
    without a residual add whose parent is the same chain with the add (torchvision's
    ``features.2.conv`` in the inverted residual ``features.2``) gives way to the parent.
    ``memo`` (path -> match) saves tracing an ancestor again across calls on one model."""
    memo = {} if memo is None else memo

    def match(path: str) -> BlockSpec | None:
        if path not in memo:
            memo[path] = match_block(model.get_submodule(path) if path else model)
        return memo[path]

    common = names[0].split(".")[:-1]
    for n in names[1:]:
        parts = n.split(".")[:-1]
        k = 0
        while k < min(len(common), len(parts)) and common[k] == parts[k]:
            k += 1
        common = common[:k]
    for depth in range(len(common), -1, -1):
        path = ".".join(common[:depth])
        spec = match(path)
        if spec is None:
            continue
        if spec.shortcut is None and depth > 0:
            parent = ".".join(common[:depth - 1])
            outer = match(parent)
            if outer is not None and outer.shortcut is not None and \
                    len(outer.stages) == len(spec.stages):
                return parent, outer
        return path, spec
    return None


@dataclass(frozen=True)
class BasicParts:
    """The modules of a residual basic block (two 3x3 convs, ReLU between and after the add;
    ``shortcut`` is ``None`` for the identity or ``(conv, bn)`` of a 1x1 projection)."""

    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    conv2: nn.Conv2d
    bn2: nn.BatchNorm2d
    shortcut: tuple[nn.Conv2d, nn.BatchNorm2d] | None


def _plain(conv: nn.Conv2d, kernel: int, padding: int) -> bool:
    return (conv.groups == 1 and conv.kernel_size == (kernel, kernel) and conv.dilation == (1, 1)
            and conv.padding == (padding, padding) and conv.stride[0] == conv.stride[1]
            and conv.padding_mode == "zeros")


def basic_parts(block: nn.Module, spec: BlockSpec | None = None) -> BasicParts | None:
    """``block``'s modules when it computes a residual basic block (CIFAR's or torchvision's:
    read from its graph), else ``None``."""
    spec = spec if spec is not None else match_block(block)
    if (spec is None or len(spec.stages) != 2 or spec.shortcut is None
            or spec.final_act != "relu" or spec.stages[0].act != "relu"):
        return None
    get = block.get_submodule
    c1, c2 = get(spec.stages[0].conv), get(spec.stages[1].conv)
    if not (_plain(c1, 3, 1) and _plain(c2, 3, 1) and c2.stride == (1, 1)):
        return None
    shortcut = None
    if spec.shortcut:
        sc = get(spec.shortcut[0])
        if not (_plain(sc, 1, 0) and sc.stride == c1.stride):
            return None
        shortcut = (sc, get(spec.shortcut[1]))
    elif c1.stride != (1, 1) or c1.in_channels != c2.out_channels:
        return None
    return BasicParts(c1, get(spec.stages[0].bn), c2, get(spec.stages[1].bn), shortcut)
