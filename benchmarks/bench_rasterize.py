"""Rasterizer speed: Triton kernels against the PyTorch reference, forward and backward.

    python benchmarks/bench_rasterize.py [--shrink N] [--no-reference]

On CUDA it times full 4K (3840 x 2160) and 8K (7680 x 4320) renders; on a CPU it times the
reference alone, on outputs shrunk 32x.

Scales x2, x3.7 and x4, the LR size being the output size over the scale; G = 4 Gaussians
per cell, radius 1, C = 3. "Gaussian evaluations" counts what the math needs, Ho Wo
(2R + 1)^2 G per pass, for both implementations. Bandwidth counts the compulsory traffic:
forward reads the Gaussian parameters and writes the image; backward reads the parameters
and the upstream gradient and writes the parameter gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from gsasr_kernels import GaussianField, axis_map
from gsasr_kernels._torch_impl import _rasterize
from machine import describe

TARGETS = {"4K": (2160, 3840), "8K": (4320, 7680)}
SCALES = (2.0, 3.7, 4.0)
G, C, RADIUS = 4, 3, 1
# Peak DRAM bandwidth in GB/s, by a substring of torch.cuda.get_device_name (first match).
PEAK_GBPS = [
    ("H200", 4800),
    ("H100 PCIe", 2000),
    ("H100 NVL", 3900),
    ("H100", 3350),
    ("A100-SXM4-40GB", 1555),
    ("A100-PCIE-40GB", 1555),
    ("A100 80GB PCIe", 1935),
    ("A100", 2039),
    ("RTX 4090", 1008),
]


def machine(device: torch.device) -> str:
    """One line naming the hardware and software the numbers come from."""
    return describe(device)


def peak_gbps(device: torch.device) -> float | None:
    """The device's peak memory bandwidth from the table, or None when unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def make_inputs(h: int, w: int, device: torch.device, seed: int = 0) -> GaussianField:
    """Random Gaussian parameters for an h x w LR image, in the model's ranges."""
    gen = torch.Generator().manual_seed(seed)
    shape = (1, h, w, G)
    params = [
        torch.rand(*shape, 2, generator=gen),
        0.08 + 0.67 * torch.rand(*shape, 2, generator=gen),
        1.8 * torch.rand(*shape, generator=gen) - 0.9,
        torch.rand(*shape, generator=gen),
        torch.randn(*shape, C, generator=gen),
    ]
    return GaussianField(*(p.to(device) for p in params))


def time_ms(fn, device: torch.device, repeats: int) -> tuple[float, float, float]:
    """(median, p20, p80) in ms: do_bench on CUDA, perf_counter medians elsewhere."""
    if device.type == "cuda":
        import triton.testing

        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8]))
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    return statistics.median(times), q[0], q[3]


def bench_one(impl, field, rows, cols, device, repeats) -> dict[str, tuple[float, ...]]:
    """Forward and backward times of one implementation on one render."""
    with torch.no_grad():
        fwd = time_ms(lambda: impl(field, rows, cols, RADIUS), device, repeats)
    leaves = [p.detach().requires_grad_() for p in field.tensors()]
    out = impl(GaussianField(*leaves), rows, cols, RADIUS)
    v = torch.randn_like(out)
    bwd = time_ms(lambda: torch.autograd.grad(out, leaves, v, retain_graph=True), device, repeats)
    return {"fwd": fwd, "bwd": bwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--shrink",
        type=int,
        default=None,
        help="divide the output sizes by this (default 1 on CUDA, 32 on CPU)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure on CPU")
    ap.add_argument("--no-reference", action="store_true", help="time the Triton kernels only")
    args = ap.parse_args()
    device = torch.device(args.device)
    shrink = args.shrink or (1 if device.type == "cuda" else 32)
    impls = {"torch": _rasterize}
    if device.type == "cuda":
        from gsasr_kernels.triton_rasterize import rasterize_triton

        impls = {"triton": rasterize_triton} | ({} if args.no_reference else impls)
    peak = peak_gbps(device)

    print(f"machine: {machine(device)}")
    print(f"peak bandwidth: {f'{peak:.0f} GB/s' if peak else 'unknown'}")
    if device.type != "cuda":
        print("Triton numbers need CUDA: timing the PyTorch reference alone", end="")
        print(f", on outputs shrunk {shrink}x" if shrink > 1 else "")
    head = (
        f"{'render':>7} {'scale':>5} {'LR':>11} {'output':>11} {'impl':>6} {'pass':>4} "
        f"{'ms (p20-p80)':>26} {'Geval/s':>8} {'GB/s':>8} {'% peak':>7}"
    )
    print(head)
    print("-" * len(head))
    for label, (ho_full, wo_full) in TARGETS.items():
        ho, wo = ho_full // shrink, wo_full // shrink
        for scale in SCALES:
            h, w = round(ho / scale), round(wo / scale)
            params = make_inputs(h, w, device)
            rows, cols = axis_map(ho, scale, h).to(device), axis_map(wo, scale, w).to(device)
            evals = ho * wo * (2 * RADIUS + 1) ** 2 * G
            param_bytes = sum(p.numel() * p.element_size() for p in params.tensors())
            image_bytes = C * ho * wo * params.means.element_size()
            traffic = {"fwd": param_bytes + image_bytes, "bwd": 2 * param_bytes + image_bytes}
            for name, impl in impls.items():
                try:
                    times = bench_one(impl, params, rows, cols, device, args.repeats)
                except torch.cuda.OutOfMemoryError:
                    print(
                        f"{label:>7} {scale:>5} {f'{h}x{w}':>11} {f'{ho}x{wo}':>11} "
                        f"{name:>6}  out of memory"
                    )
                    torch.cuda.empty_cache()
                    continue
                for pas, (med, lo, hi) in times.items():
                    gbps = traffic[pas] / med / 1e6
                    pct = f"{100 * gbps / peak:6.1f}%" if peak else f"{'unknown':>7}"
                    print(
                        f"{label:>7} {scale:>5} {f'{h}x{w}':>11} {f'{ho}x{wo}':>11} "
                        f"{name:>6} {pas:>4} {f'{med:.3f} ({lo:.3f}-{hi:.3f})':>26} "
                        f"{evals / med / 1e6:8.3g} {gbps:8.3g} {pct}"
                    )
    if "triton" in impls:
        from gsasr_kernels import triton_rasterize as tr

        for kernel in (tr._fwd_kernel, tr._bwd_kernel):
            print(f"autotuned {kernel.fn.__name__}: {kernel.cache}")


if __name__ == "__main__":
    main()
