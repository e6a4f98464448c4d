#!/usr/bin/python3
"""pytorch_bench.py - the PyTorch side of the benchmark suite (bench/run): training images/s of
the same networks as `auxps bench`, with the same quantizers, auxiliary module and optimizer.

The model is tests/golden/auxnet.py, the PyTorch reference the C engine's golden files come
from: METHOD.md's ResNet with DoReFa weights, k-bit activations and the straight-through
estimator, with or without the full-precision auxiliary module. Each tensor of the flat
parameter vector becomes its own leaf tensor (as an nn.Module would hold them), and one step is
what AuxPS's trainer_step does: forward in training mode (batch statistics, running statistics
updated), backward of L_low + lambda L_aux, and torch.optim.SGD(lr 0.05, momentum 0.9,
Nesterov, weight decay 5e-4). Inputs are one batch of N(0, 1) images with uniform labels,
float32. Timing is auxps bench's: a warm-up of at least `warmup` steps and `warmup_s` seconds
(oneDNN builds its kernels in the first steps), then steps until at least `steps` steps and
`seconds` seconds have passed; images/s = steps * batch / wall time.

Threads: torch.set_num_threads(T) for PyTorch's own kernels (OpenMP, oneDNN convolutions) and
openblas_set_num_threads(T) on the OpenBLAS that torch loaded, so both sides of a comparison
use T threads everywhere. The malloc label says whether this process runs with glibc's
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 4294967296 ("tuned") or not ("untuned");
the caller chooses by the environment it starts this script with.

Usage:
    pytorch_bench.py --model resnet8 --bits 2 --aux on --batch 128 --threads 1 [--seconds S]
                     [--steps N] [--warmup N] [--warmup-seconds W]   one configuration, one JSON line
    pytorch_bench.py --serve                           "ready", then one request per stdin line:
                     MODEL BITS AUX BATCH THREADS SECONDS STEPS WARMUP WARMUP_S -> one JSON line each
The JSON line mirrors auxps bench's:
    {"bench":"compute","impl":"pytorch","malloc":"tuned","torch":"1.13.0a0","model":"resnet8",
     "blocks":1,"wbits":2,"abits":2,"aux":true,"batch":128,"threads":1,"steps":N,"seconds":T,
     "images_per_s":X,"fwd_macs_per_image":M}
fwd_macs_per_image is counted here independently of the C side: the multiply-adds of every
F.conv2d and F.linear call of one forward pass, divided by the batch.
"""

import argparse
import ctypes
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
import auxnet  # noqa: E402  (the path above makes it importable)

MODELS = {"resnet8": 1, "resnet20": 3}
TUNED_VALUE = "4294967296"
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4     # METHOD.md's recipe


def malloc_label():
    tuned = all(os.environ.get(k) == TUNED_VALUE for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    return "tuned" if tuned else "untuned"


def openblas_handle():
    """The OpenBLAS library torch loaded (Debian's torch uses the system BLAS), or None."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "libopenblas" in line}
    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p)
            lib.openblas_set_num_threads  # raises AttributeError when missing
            return lib
        except (OSError, AttributeError):
            continue
    return None


def set_threads(n, blas):
    torch.set_num_threads(n)
    if blas is not None:
        blas.openblas_set_num_threads(n)


def config(model, bits, aux, batch):
    return auxnet.Config(in_c=1, in_h=28, in_w=28, classes=10, widths=(16, 32, 64), blocks=MODELS[model],
                         wbits=bits, abits=bits, aux=aux, aux_lambda=1.0, batch=batch)


def count_macs(cfg, P, S, x, y):
    """Multiply-adds of one training forward pass per image, by wrapping F.conv2d and F.linear."""
    total = [0]
    conv, linear = F.conv2d, F.linear

    def conv_counted(inp, w, *a, **k):
        out = conv(inp, w, *a, **k)
        total[0] += out.numel() * w[0].numel()        # each output: C_in * kh * kw MACs
        return out

    def linear_counted(inp, w, *a, **k):
        out = linear(inp, w, *a, **k)
        total[0] += out.numel() * w.shape[1]
        return out

    S_copy = {k: (m.clone(), v.clone()) for k, (m, v) in S.items()}
    F.conv2d, F.linear = conv_counted, linear_counted
    try:
        with torch.no_grad():
            auxnet.forward(cfg, P, S_copy, x, y, True, auxnet.NoMargins())
    finally:
        F.conv2d, F.linear = conv, linear
    return total[0] // cfg.batch


def measure(model, bits, aux, batch, threads, seconds, min_steps, warmup, warmup_s, blas):
    set_threads(threads, blas)
    cfg = config(model, bits, aux, batch)
    ts, _ = auxnet.layout(cfg)
    gen = torch.Generator().manual_seed(1)
    flat = auxnet.init_params(cfg, gen).float()
    P = {t.name: flat[t.offset:t.offset + t.size].view(t.shape).clone().requires_grad_(True) for t in ts}
    S = auxnet.fresh_stats(cfg, torch.float32)
    x = torch.randn((batch, cfg.in_c, cfg.in_h, cfg.in_w), generator=gen)
    y = torch.randint(0, cfg.classes, (batch,), generator=gen)
    opt = torch.optim.SGD(list(P.values()), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
    macs = count_macs(cfg, P, S, x, y)
    nm = auxnet.NoMargins()

    def step():
        opt.zero_grad(set_to_none=True)
        out = auxnet.forward(cfg, P, S, x, y, True, nm)
        out.loss.backward()
        opt.step()

    tw, i = time.monotonic(), 0
    while i < warmup or time.monotonic() - tw < warmup_s:
        step()
        i += 1
    t0 = time.monotonic()
    t, n = t0, 0
    while n < min_steps or t - t0 < seconds:
        step()
        n += 1
        t = time.monotonic()
    secs = t - t0
    return {"bench": "compute", "impl": "pytorch", "malloc": malloc_label(), "torch": torch.__version__,
            "model": model, "blocks": cfg.blocks, "wbits": bits, "abits": bits, "aux": aux, "batch": batch,
            "threads": threads, "steps": n, "seconds": round(secs, 3), "images_per_s": round(n * batch / secs, 2),
            "fwd_macs_per_image": macs}


def parse_request(words):
    model, bits, aux, batch, threads, seconds, steps, warmup, warmup_s = words
    if model not in MODELS or aux not in ("on", "off"):
        raise ValueError("model must be resnet8 or resnet20, aux on or off")
    b = int(bits)
    if not (1 <= b <= 8 or b == 32):
        raise ValueError("bits must be 1..8 or 32")
    return (model, b, aux == "on", int(batch), int(threads), float(seconds), int(steps), int(warmup),
            float(warmup_s))


def serve(blas):
    """Says "ready" (torch is imported), then answers one configuration per stdin line with one
    JSON line; an error answers {"error": ...} and the server goes on."""
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            r = measure(*parse_request(words), blas)
        except (ValueError, RuntimeError) as e:
            r = {"error": str(e)}
        print(json.dumps(r, separators=(",", ":")), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--model", default="resnet8", choices=sorted(MODELS))
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--aux", default="on", choices=["on", "off"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--warmup-seconds", type=float, default=0.0)
    a = ap.parse_args()
    blas = openblas_handle()
    if a.serve:
        serve(blas)
        return
    r = measure(*parse_request([a.model, str(a.bits), a.aux, str(a.batch), str(a.threads), str(a.seconds),
                                str(a.steps), str(a.warmup), str(a.warmup_seconds)]), blas)
    print(json.dumps(r, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
