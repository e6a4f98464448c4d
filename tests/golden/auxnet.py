"""auxnet.py - the network of docs/MODEL.md in PyTorch, shared by the golden-file generator
(make_golden.py) and the PyTorch side of the benchmark suite (bench/pytorch_bench.py).

The ResNet with optional full-precision auxiliary module of METHOD.md, built from a flat
parameter vector laid out exactly as docs/MODEL.md says: the layout, the initialisation, the
DoReFa quantizers with their straight-through estimator, and one forward pass written with
PyTorch's own operators (F.conv2d, F.batch_norm, F.linear, F.cross_entropy). Nothing here sets
torch's global state (default dtype, threads): each caller chooses its own.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# Batch-norm constants (docs/MODEL.md).
BN_MOMENTUM, BN_EPS = 0.1, 1e-5


@dataclass
class Config:
    in_c: int
    in_h: int
    in_w: int
    classes: int
    widths: Tuple[int, int, int]
    blocks: int
    wbits: int
    abits: int
    aux: bool
    aux_lambda: float
    batch: int


# --------------------------------------------------------------------------------------------
# Layout of the flat parameter and stats vectors (docs/MODEL.md, "Parameter vector").
# --------------------------------------------------------------------------------------------

@dataclass
class Block:
    prefix: str      # "s{stage}.b{block}"
    cin: int
    c: int
    stride: int
    changes: bool    # shape changes -> conv shortcut in the low net, downsample in the aux net


def block_plan(cfg: Config) -> List[Block]:
    plan, cin = [], cfg.widths[0]   # the stem outputs widths[0] channels
    for i in range(3):
        c = cfg.widths[i]
        for j in range(cfg.blocks):
            stride = 2 if (j == 0 and i > 0) else 1
            plan.append(Block(f"s{i}.b{j}", cin, c, stride, cin != c or stride != 1))
            cin = c
    return plan


@dataclass
class Tensor:
    name: str
    shape: Tuple[int, ...]
    kind: str        # conv | qconv | gamma | beta | fc_w | fc_b
    offset: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def layout(cfg: Config) -> Tuple[List[Tensor], List[Tuple[str, int]]]:
    """Returns the tensors in parameter order, and the batch norms (name, channels) in stats
    order (= the order they appear in the parameter vector)."""
    ts: List[Tensor] = []
    bns: List[Tuple[str, int]] = []

    def conv(name, cout, cin, k, quantized=False):
        ts.append(Tensor(name + ".w", (cout, cin, k, k), "qconv" if quantized else "conv"))

    def bn(name, c):
        ts.append(Tensor(name + ".gamma", (c,), "gamma"))
        ts.append(Tensor(name + ".beta", (c,), "beta"))
        bns.append((name, c))

    def fc(name, cout, cin):
        ts.append(Tensor(name + ".w", (cout, cin), "fc_w"))
        ts.append(Tensor(name + ".b", (cout,), "fc_b"))

    w1, w3 = cfg.widths[0], cfg.widths[2]
    plan = block_plan(cfg)
    conv("stem.conv", w1, cfg.in_c, 3)
    bn("stem.bn", w1)
    for b in plan:
        conv(f"{b.prefix}.conv1", b.c, b.cin, 3, quantized=True)
        bn(f"{b.prefix}.bn1", b.c)
        conv(f"{b.prefix}.conv2", b.c, b.c, 3, quantized=True)
        bn(f"{b.prefix}.bn2", b.c)
        if b.changes:
            conv(f"{b.prefix}.sc.conv", b.c, b.cin, 1, quantized=True)
            bn(f"{b.prefix}.sc.bn", b.c)
    fc("fc1", cfg.classes, w3)
    if cfg.aux:   # after the inference network, so that it is a prefix of the vector
        conv("aux.start.conv", w1, w1, 1)
        bn("aux.start.bn", w1)
        for b in plan:
            if b.changes:
                conv(f"aux.{b.prefix}.dn.conv", b.c, b.cin, 1)
                bn(f"aux.{b.prefix}.dn.bn", b.c)
            conv(f"aux.{b.prefix}.ad.conv", b.c, b.c, 1)
            bn(f"aux.{b.prefix}.ad.bn", b.c)
        fc("fc2", cfg.classes, w3)

    off = 0
    for t in ts:
        t.offset = off
        off += t.size
    return ts, bns


def num_params(cfg: Config) -> int:
    ts, _ = layout(cfg)
    return ts[-1].offset + ts[-1].size


def unflatten(flat: torch.Tensor, ts: List[Tensor]) -> Dict[str, torch.Tensor]:
    """Named views into the flat vector (gradients flow back into `flat`)."""
    return {t.name: flat[t.offset:t.offset + t.size].view(t.shape) for t in ts}


def init_params(cfg: Config, gen: torch.Generator) -> torch.Tensor:
    """He-normal convs (std = sqrt(2 / fan_out)), PyTorch-default linears, and non-trivial batch
    norms (gamma ~ U[0.5, 1.5], beta ~ U[-0.3, 0.3]) so that the affine part is exercised."""
    ts, _ = layout(cfg)
    shapes = {t.name: t.shape for t in ts}
    parts = []
    for t in ts:
        if t.kind in ("conv", "qconv"):
            fan_out = t.shape[0] * t.shape[2] * t.shape[3]
            v = torch.randn(t.shape, generator=gen) * math.sqrt(2.0 / fan_out)
        elif t.kind == "gamma":
            v = 0.5 + torch.rand(t.shape, generator=gen)
        elif t.kind == "beta":
            v = -0.3 + 0.6 * torch.rand(t.shape, generator=gen)
        else:  # fc_w (classes, in) and its fc_b: U[-1/sqrt(in), 1/sqrt(in)]
            fan_in = shapes[t.name[:-2] + ".w"][1]
            bound = 1.0 / math.sqrt(fan_in)
            v = (2.0 * torch.rand(t.shape, generator=gen) - 1.0) * bound
        parts.append(v.reshape(-1))
    flat = torch.cat(parts)
    # The reference runs from exactly the float32 values the engine will load.
    return flat.float().double()


# --------------------------------------------------------------------------------------------
# Margins: how far every discontinuity of the forward/backward pass is from being crossed.
# --------------------------------------------------------------------------------------------

class Rejected(Exception):
    pass


class Margins:
    """Tracks, over every input of a non-smooth function, the distance to its nearest
    discontinuity, in the function's scaled units (n = 2^k - 1; n = 1 for ReLU):
      * k-bit activation a = q_k(clip(x, 0, 1)): n*x against the half-integers in (0, n)
        (rounding) and against 0 and n (clip edges, where the STE mask switches);
      * ReLU: x against 0 (where the gradient mask switches);
      * k-bit weights: n*u against the half-integers (the code boundaries).
    Also tracks the relative gap between the two largest |tanh(w)| of each weight tensor."""

    def __init__(self, reject_below: float = 0.0):
        self.margin = math.inf
        self.where = ""
        self.max_gap = math.inf
        self.reject_below = reject_below   # raise Rejected as soon as the margin drops below

    def _upd(self, d: torch.Tensor, where: str):
        if d.numel() and float(d.min()) < self.margin:
            self.margin, self.where = float(d.min()), where
            if self.margin < self.reject_below:
                raise Rejected()

    def act(self, x: torch.Tensor, n: int, where: str):
        s = x.detach() * n
        d = torch.minimum(s.abs(), (s - n).abs())                      # clip edges
        inside = s[(s >= 0) & (s <= n)]
        self._upd(d, where)
        self._upd(((inside - torch.floor(inside)) - 0.5).abs(), where)  # rounding

    def relu(self, x: torch.Tensor, where: str):
        self._upd(x.detach().abs(), where)

    def weight(self, u: torch.Tensor, t: torch.Tensor, n: int, where: str):
        s = u.detach() * n
        self._upd(((s - torch.floor(s)) - 0.5).abs(), where)
        a = torch.sort(t.detach().abs().reshape(-1), descending=True).values
        if a.numel() > 1:
            self.max_gap = min(self.max_gap, float((a[0] - a[1]) / a[0]))


class NoMargins(Margins):
    """Tracks nothing and computes nothing: for passes that only need the values (the
    reference step, the benchmark)."""

    def _upd(self, d, where):
        pass

    def act(self, x, n, where):
        pass

    def relu(self, x, where):
        pass

    def weight(self, u, t, n, where):
        pass


# --------------------------------------------------------------------------------------------
# Quantizers (DoReFa, straight-through estimator; docs/MODEL.md "Quantizers").
# --------------------------------------------------------------------------------------------

def ste_round(s: torch.Tensor) -> torch.Tensor:
    """round(s) in the forward pass (half to even), identity in the backward pass."""
    return s + (torch.round(s) - s).detach()


def quant_weight(w: torch.Tensor, k: int, mg: Margins, where: str) -> torch.Tensor:
    if k >= 32:
        return w
    if k == 1:
        # sign(w) * mean|w|; backward dw = dwq (STE, the mean a constant).
        return w + (torch.sign(w) * w.detach().abs().mean() - w).detach()
    n = 2 ** k - 1
    t = torch.tanh(w)
    m = torch.max(torch.abs(t))          # full reduction: gradient split evenly between ties
    u = t / (2.0 * m) + 0.5
    mg.weight(u, t, n, where)
    return 2.0 * ste_round(u * n) / n - 1.0


def weight_codes(w: torch.Tensor, k: int) -> np.ndarray:
    """Integer codes round((2^k - 1) u) of a k-bit (k >= 2) weight tensor, flat."""
    n = 2 ** k - 1
    t = torch.tanh(w.detach())
    u = t / (2.0 * t.abs().max()) + 0.5
    return torch.round(u * n).reshape(-1).numpy().astype(np.uint8)


def quant_act(x: torch.Tensor, k: int, mg: Margins, where: str) -> torch.Tensor:
    if k >= 32:
        mg.relu(x, where)
        return F.relu(x)
    n = 2 ** k - 1
    mg.act(x, n, where)
    # clamp's gradient is 1 for min <= x <= max (inclusive), 0 elsewhere, as the spec says.
    return ste_round(torch.clamp(x, 0.0, 1.0) * n) / n


# --------------------------------------------------------------------------------------------
# The network.
# --------------------------------------------------------------------------------------------

@dataclass
class Output:
    logits_low: torch.Tensor
    logits_aux: torch.Tensor   # None without the auxiliary module (or in eval mode)
    loss_low: torch.Tensor
    loss_aux: torch.Tensor
    loss: torch.Tensor


def forward(cfg: Config, P: Dict[str, torch.Tensor], S: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
            x: torch.Tensor, y: torch.Tensor, training: bool, mg: Margins) -> Output:
    """One forward pass. P: named parameter tensors. S: running (mean, var) per batch norm,
    updated in place in training mode. In eval mode the auxiliary module is not evaluated."""

    def bn(h, name):
        rm, rv = S[name]
        return F.batch_norm(h, rm, rv, P[name + ".gamma"], P[name + ".beta"],
                            training=training, momentum=BN_MOMENTUM, eps=BN_EPS)

    def conv(h, name, stride, quantized=False):
        w = P[name + ".w"]
        if quantized:
            w = quant_weight(w, cfg.wbits, mg, name)
        pad = w.shape[-1] // 2     # 3x3 -> pad 1, 1x1 -> pad 0
        return F.conv2d(h, w, stride=stride, padding=pad)

    use_aux = cfg.aux and training
    plan = block_plan(cfg)

    s = bn(conv(x, "stem.conv", 1), "stem.bn")
    h = quant_act(s, cfg.abits, mg, "stem.act")
    a = bn(conv(s, "aux.start.conv", 1), "aux.start.bn") if use_aux else None

    for bi, b in enumerate(plan):
        p = b.prefix
        last = bi == len(plan) - 1
        g = quant_act(bn(conv(h, f"{p}.conv1", b.stride, True), f"{p}.bn1"), cfg.abits, mg, f"{p}.act1")
        o = bn(conv(g, f"{p}.conv2", 1, True), f"{p}.bn2")
        o = o + (bn(conv(h, f"{p}.sc.conv", b.stride, True), f"{p}.sc.bn") if b.changes else h)
        if last:   # full precision into the classifier
            mg.relu(o, f"{p}.out_relu")
            h = F.relu(o)
        else:
            h = quant_act(o, cfg.abits, mg, f"{p}.act2")
        if use_aux:
            d = bn(conv(a, f"aux.{p}.dn.conv", b.stride), f"aux.{p}.dn.bn") if b.changes else a
            z = d + bn(conv(o, f"aux.{p}.ad.conv", 1), f"aux.{p}.ad.bn")
            mg.relu(z, f"aux.{p}.relu")
            a = F.relu(z)

    logits_low = F.linear(h.mean(dim=(2, 3)), P["fc1.w"], P["fc1.b"])
    loss_low = F.cross_entropy(logits_low, y)           # mean over the batch
    if use_aux:
        logits_aux = F.linear(a.mean(dim=(2, 3)), P["fc2.w"], P["fc2.b"])
        loss_aux = F.cross_entropy(logits_aux, y)
    else:
        logits_aux, loss_aux = None, torch.zeros((), dtype=logits_low.dtype)
    loss = loss_low + cfg.aux_lambda * loss_aux
    return Output(logits_low, logits_aux, loss_low, loss_aux, loss)


def fresh_stats(cfg: Config, dtype=torch.float64) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Running statistics at initialisation: mean 0, var 1."""
    _, bns = layout(cfg)
    return {name: (torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)) for name, c in bns}


def flat_stats(cfg: Config, S) -> torch.Tensor:
    """The stats vector: for every batch norm in parameter order, mean (c) then var (c)."""
    _, bns = layout(cfg)
    return torch.cat([torch.cat([S[name][0], S[name][1]]) for name, _ in bns])

