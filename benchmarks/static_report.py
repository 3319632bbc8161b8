"""Static performance report of the Triton rasterizer, from the compiled code, without a GPU.

    python benchmarks/static_report.py [--out FILE] [--archs 90 89] [--grid 2]

The case: a 3840 x 2160 output rendered at x4 from a 960 x 540 field, G = grid^2 Gaussians
per LR pixel (default 4), C = 3, radius 1, fp32, batch 1. For each kernel of the forward
and backward passes, every autotune config is compiled for sm_90 (H100) and sm_89
(RTX 4090) from the launch arguments the wrapper builds for this case (`cubin.py`), and:

- registers and shared memory per program, from the cubin;
- the SASS instructions of each loop, times its trip count (computed on the host from the
  same axis maps the kernel reads), summed over all warps: the warp instructions issued;
- estimated time = max(issue, MUFU, DRAM) where issue = warp instructions / (SMs x 4
  schedulers x clock), MUFU = MUFU instructions x 32 / (SMs x 16 lanes x clock) and
  DRAM = the bytes of every tensor the kernel takes, each moved once, / bandwidth. A lower
  bound: full issue every cycle, no stalls on latency or dependencies, perfect caching;
- roofline = max(compulsory DRAM bytes / bandwidth, FLOPs / FP32 peak), where FLOPs
  count what the math needs per (pixel, Gaussian) evaluation (`FLOPS_PER_EVAL`) and the
  bytes are the parameters and images each pass must read and write once.

A pass is its kernels in sequence; each kernel at its best config (what autotuning would
pick if the estimate were the measurement). The figures are estimates, not measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cubin import compile_launch, executed, jit_function, loop_nest, resources  # noqa: E402

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
    issue = counts["all"] * warps / (sms * 4 * ghz * 1e6)  # 4 schedulers, 1 instr/clock
    mufu = counts.get("MUFU", 0.0) * warps * 32 / (sms * MUFU_LANES * ghz * 1e6)
    return issue, mufu


def kernel_rows(launch, trip_model, arch: int):
    """One row per autotune config: resources, loops and estimate of one launch."""
    jit_fn = jit_function(launch.kernel)
    source = jit_fn.fn.__code__.co_filename
    rows = []
    for config in launch.configs:
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
        moved = sum(a.numel() * a.element_size() for a in launch.args if hasattr(a, "numel"))
        dram = moved / DEVICES[arch][4] / 1e6
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
                "dram_ms": dram,
                "ms": max(issue, mufu, dram),
            }
        )
    return rows


def _trips(launch, meta):
    """[(programs, {source loop: trips per entry})] of one launch and config. Every loop
    bound is uniform across programs: the forward loops over the (2R + 1)^2 neighbour
    cells (`t`) and their G Gaussians (`g`); the backward over column offsets (`ox`),
    blocks of SX columns (`xb`), row offsets (`oy`) and the rows of a cell (`r`), the
    last two at their most over the cells, masked below it."""
    name = jit_function(launch.kernel).fn.__name__
    programs = 1
    for n in launch.grid(meta):
        programs *= n
    names = jit_function(launch.kernel).arg_names
    arg = dict(zip(names, launch.args, strict=False)) | launch.meta  # constexprs in meta
    cells = (2 * arg["R"] + 1) if "R" in arg else 0
    if name == "_fwd_kernel":
        return [(programs, {"t": cells * cells, "g": arg["G"]})]
    if name == "_bwd_kernel":
        trips = {"ox": cells, "xb": arg["n_col_blocks"], "oy": cells, "r": arg["max_rows"]}
        return [(programs, trips)]
    return [(programs, {})]  # _pack_kernel: no loops


def launches(field, rows, cols, radius):
    """{pass: [(Launch, trip model)]} from the wrapper's own launch helpers."""
    from gsasr_kernels import triton_rasterize as tr

    _, h, w, _ = field.shape
    samples = tr.Samples.of(rows, cols, h, w, torch.device("cpu"))
    out, fwd = tr._fwd_launches(field, samples, radius)
    _, bwd = tr._bwd_launches(field, samples, radius, torch.ones_like(out))
    return {"fwd": [(x, _trips) for x in fwd], "bwd": [(x, _trips) for x in bwd]}


def report(grid: int, archs: list[int], summary_rows: list | None = None) -> str:
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
        "| warp instr (M) | MUFU (M) | issue ms | MUFU ms | DRAM ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
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
                        f"| {r['mufu'] / 1e6:.2f} | {r['issue_ms']:.3f} | {r['mufu_ms']:.3f} "
                        f"| {r['dram_ms']:.3f} |"
                    )
                best.append(min(krows, key=lambda r: r["ms"]))
            est = sum(r["ms"] for r in best)
            if summary_rows is not None:
                summary_rows.append(
                    {"arch": arch, "pass": pas, "estimate_ms": est, "roofline_ms": roof[pas]}
                )
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
    ap.add_argument("--json", help="also write the per-pass estimates and rooflines here")
    args = ap.parse_args()
    import triton

    rows: list = []
    text = (
        f"# Static report: Triton rasterizer at 4K x4 (triton {triton.__version__}, "
        f"torch {torch.__version__})\n\n" + report(args.grid, args.archs, rows)
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
