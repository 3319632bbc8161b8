"""Static performance report of the Triton rasterizer, from the compiled code, without a GPU.

    python benchmarks/static_report.py [--out FILE] [--archs 90 89] [--grid 2]

The case: a 3840 x 2160 output rendered at x4 from a 960 x 540 field, G = grid^2 Gaussians
per LR pixel (default 4), C = 3, radius 1, fp32, batch 1. For each kernel of the forward
and backward passes, every autotune config is compiled for sm_90 (H100) and sm_89
(RTX 4090) from the launch arguments the wrapper builds for this case (`cubin.py`), and:

- registers and shared memory per program, from the cubin;
- the SASS instructions of each loop, times its trip count (computed on the host from the
  same axis maps the kernel reads), summed over all warps: the warp instructions issued;
- estimated time = max(issue, MUFU) where issue = warp instructions / (SMs x 4 schedulers
  x clock) and MUFU = MUFU instructions x 32 / (SMs x 16 lanes x clock). A lower bound:
  it assumes full issue every cycle, no stalls on memory or dependencies;
- roofline = max(compulsory DRAM bytes / bandwidth, FLOPs / FP32 peak), where FLOPs
  count what the math needs per (pixel, Gaussian) evaluation (`FLOPS_PER_EVAL`) and the
  bytes are the parameters and images each pass must read and write once.

A pass is its kernels in sequence; each kernel at its best config (what autotuning would
pick if the estimate were the measurement). The figures are estimates, not measurements.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cubin import compile_launch, executed, loop_nest, resources  # noqa: E402

# Published figures: SMs, boost clock (GHz), FP32 TFLOPS (non-tensor), DRAM GB/s.
DEVICES = {
    90: ("H100 SXM", 132, 1.98, 66.9, 3350),
    89: ("RTX 4090", 128, 2.52, 82.6, 1008),
}
MUFU_LANES = 16  # per SM per clock, sm_80 to sm_90
OUT_H, OUT_W, SCALE, C, RADIUS = 2160, 3840, 4.0, 3, 1
# FLOPs per (pixel, Gaussian) evaluation, an FMA counting 2. Forward: d = p - m (2),
# the quadratic form A dx^2 + 2B dx dy + C dy^2 (3 products + 3 multiply-adds = 9), the
# taper (|d|^2: 1, 1 - t/R^2: 2, clamp: 1, square: 1), exp (1), weight (1), C
# multiply-adds into the pixel (2C). Backward: the forward's weight again (17), the
# colour-gradient dot product s = col . v (2C), and 7 + C sums of products over pixels
# (weight x v per channel; w s; w s dx^2, dx dy, dy^2; w s dx, dy; s e u dx, dy: 2 each,
# with 3 products to form w s and s e u) = 17 + 2C + 2(8 + C) + 3.
FLOPS_PER_EVAL = {"fwd": 17 + 2 * C, "bwd": 17 + 2 * C + 2 * (8 + C) + 3}


def problem(grid: int):
    """The 4K x4 field (fp32, random) and its axis maps, on the CPU."""
    from gsasr_kernels import GaussianField, axis_map

    h, w, g = round(OUT_H / SCALE), round(OUT_W / SCALE), grid * grid
    gen = torch.Generator().manual_seed(0)
    shape = (1, h, w, g)
    field = GaussianField(
        torch.rand(*shape, 2, generator=gen),
        0.08 + 0.67 * torch.rand(*shape, 2, generator=gen),
        1.8 * torch.rand(*shape, generator=gen) - 0.9,
        torch.rand(*shape, generator=gen),
        torch.randn(*shape, C, generator=gen),
    )
    return field, axis_map(OUT_H, SCALE, h), axis_map(OUT_W, SCALE, w)


def roofline_ms(field, arch: int) -> dict[str, float]:
    """max(bytes / bandwidth, FLOPs / peak) per pass, in ms."""
    _, _, _, tflops, gbps = DEVICES[arch]
    b, h, w, g = field.shape
    params = sum(t.numel() * t.element_size() for t in field.tensors())
    image = b * C * OUT_H * OUT_W * 4
    evals = b * OUT_H * OUT_W * (2 * RADIUS + 1) ** 2 * g
    traffic = {"fwd": params + image, "bwd": 2 * params + image}
    return {
        p: max(traffic[p] / gbps / 1e6, evals * FLOPS_PER_EVAL[p] / tflops / 1e9)
        for p in ("fwd", "bwd")
    }


def estimate_ms(counts: dict, warps: float, arch: int) -> tuple[float, float]:
    """(issue-bound, MUFU-bound) ms for `warps` warps each issuing `counts`."""
    _, sms, ghz, _, _ = DEVICES[arch]
    issue = counts["all"] * warps / (sms * 4 * ghz * 1e6)
    mufu = counts.get("MUFU", 0.0) * warps * 32 / (sms * MUFU_LANES * ghz * 1e6)
    return issue, mufu


def kernel_rows(launch, trip_model, arch: int):
    """One row per autotune config: resources, loops and estimate of one launch."""
    jit_fn = launch.kernel.fn
    source = jit_fn.fn.__code__.co_filename
    rows = []
    for config in launch.kernel.configs:
        kernel = compile_launch(launch, config, arch)
        res = resources(kernel, source)
        roots = loop_nest(res.sass, jit_fn)
        total: Counter = Counter()
        warps = 0
        for n_programs, trips in trip_model(launch, config.all_kwargs()):
            counts = executed(res.sass, roots, trips)  # per warp of one program
            total.update({k: v * n_programs * config.num_warps for k, v in counts.items()})
            warps += n_programs * config.num_warps
        per_warp = {k: v / warps for k, v in total.items()}
        issue, mufu = estimate_ms(per_warp, warps, arch)
        loops = []

        def describe(loop, depth=0, loops=loops):
            body = len(loop.instrs) - sum(len(c.instrs) for c in loop.children)
            loops.append(f"{'  ' * depth}{loop.var}: {body} instr")
            for child in loop.children:
                describe(child, depth + 1)

        for root in roots:
            describe(root)
        rows.append(
            {
                "kernel": jit_fn.fn.__name__,
                "config": ", ".join(f"{k}={v}" for k, v in config.kwargs.items())
                + f", warps={config.num_warps}",
                "regs": res.regs,
                "smem": res.shared,
                "spill": res.local or res.spill_instrs,
                "loops": "; ".join(loops) or "-",
                "warp_instr": total["all"],
                "mufu": total.get("MUFU", 0.0),
                "issue_ms": issue,
                "mufu_ms": mufu,
                "ms": max(issue, mufu),
            }
        )
    return rows


def _tiles(cell: torch.Tensor, block: int, radius: int, n_cells: int) -> torch.Tensor:
    """Per tile of `block` output samples: how many LR cells its window spans."""
    n = cell.numel()
    first = cell[0:n:block]
    last = cell[torch.clamp(torch.arange(0, n, block) + block - 1, max=n - 1)]
    return torch.clamp(last + radius + 1, max=n_cells) - torch.clamp(first - radius, min=0)


def _fwd_trips(launch, meta):
    """Forward: one program per BLOCK_H x BLOCK_W output tile, looping over the cells of
    the tile's window (`cy`, `cx`) and their Gaussians (`g`)."""
    row_cell, col_cell = launch.args[5], launch.args[7]
    h, w, g = launch.args[16:19]
    r = launch.meta["R"]
    ny = _tiles(row_cell, meta["BLOCK_H"], r, h)
    nx = _tiles(col_cell, meta["BLOCK_W"], r, w)
    pairs = Counter((int(a), int(b)) for a in ny for b in nx)
    return [(n, {"cy": a, "cx": b, "g": g}) for (a, b), n in pairs.items()]


def _bwd_trips(launch, meta):
    """Backward: one program per BLOCK_Y x BLOCK_X cells, looping over the pixel tiles of
    their footprint (`i0` rows, `j0` columns)."""
    row_start, row_end, col_start, col_end = launch.args[9:13]
    h, w = launch.args[-4], launch.args[-3]

    def tiles(start, end, n, cells, block):
        k = torch.arange(0, n, cells)
        lo = start[k]
        hi = end[torch.clamp(k + cells - 1, max=n - 1)]
        return (hi - lo + block - 1) // block

    ni = tiles(row_start, row_end, h, meta["BLOCK_Y"], meta["BLOCK_H"])
    nj = tiles(col_start, col_end, w, meta["BLOCK_X"], meta["BLOCK_W"])
    pairs = Counter((int(a), int(b)) for a in ni for b in nj)
    return [(n, {"i0": a, "j0": b}) for (a, b), n in pairs.items()]


def launches(field, rows, cols, radius):
    """{pass: [(Launch, trip model)]} from the wrapper's own launch helpers."""
    from gsasr_kernels import triton_rasterize as tr

    axes = tr._axes(rows, cols, torch.device("cpu"))
    out, fwd = tr._fwd_launch(field, axes, radius)
    _, bwd = tr._bwd_launch(field, axes, radius, torch.ones_like(out))
    return {"fwd": [(fwd, _fwd_trips)], "bwd": [(bwd, _bwd_trips)]}


def report(grid: int, archs: list[int]) -> str:
    field, rows, cols = problem(grid)
    lines = [
        f"Case: {OUT_W}x{OUT_H} output, x{SCALE:g} from {field.shape[2]}x{field.shape[1]}, "
        f"G={field.shape[3]}, C={C}, R={RADIUS}, fp32, batch 1.",
        "",
    ]
    summary = [
        "| GPU | pass | roofline ms | estimate ms | x roofline | kernels (best config) |",
        "|---|---|---|---|---|---|",
    ]
    detail = [
        "| GPU | kernel | config | regs | smem B | spill | loops (body SASS) "
        "| warp instr (M) | MUFU (M) | issue ms | MUFU ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch in archs:
        name = DEVICES[arch][0]
        roof = roofline_ms(field, arch)
        for pas, pass_launches in launches(field, rows, cols, RADIUS).items():
            best = []
            for launch, model in pass_launches:
                krows = kernel_rows(launch, model, arch)
                for r in krows:
                    detail.append(
                        f"| {name} | {r['kernel']} | {r['config']} | {r['regs']} | {r['smem']} "
                        f"| {r['spill'] or 0} | {r['loops']} | {r['warp_instr'] / 1e6:.1f} "
                        f"| {r['mufu'] / 1e6:.2f} | {r['issue_ms']:.3f} | {r['mufu_ms']:.3f} |"
                    )
                best.append(min(krows, key=lambda r: r["ms"]))
            est = sum(r["ms"] for r in best)
            which = "; ".join(f"{r['kernel']} ({r['config']}) {r['ms']:.3f}" for r in best)
            summary.append(
                f"| {name} | {pas} | {roof[pas]:.3f} | {est:.3f} | {est / roof[pas]:.1f} "
                f"| {which} |"
            )
    return "\n".join(lines + summary + ["", "Every config:", ""] + detail) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="also write the report (Markdown) to this file")
    ap.add_argument("--archs", type=int, nargs="+", default=[90, 89])
    ap.add_argument("--grid", type=int, default=2, help="Gaussians per LR pixel = grid^2")
    args = ap.parse_args()
    import triton

    text = (
        f"# Static report: Triton rasterizer at 4K x4 (triton {triton.__version__}, "
        f"torch {torch.__version__})\n\n" + report(args.grid, args.archs)
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
