"""CI check, no GPU needed: every rasterizer kernel compiles to a cubin for real GPUs.

    python benchmarks/compile_check.py [--archs 80 86 89 90] [--jobs N]

For sm_80, sm_86, sm_89 and sm_90, fp32, fp16 and bf16, and each case below, the
wrapper's own launch helpers (`_fwd_launch`, `_bwd_launch`) build the launches on CPU
tensors, and every autotune config of every kernel is compiled by Triton's compiler with
the ptxas of the Triton wheel (`cubin.py`). Exit status 1, with a table of what failed,
on a compile error, on registers or shared memory over the target's limits, or on any
register spill (local memory or STL/LDL instructions in the SASS).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, before Triton is imported

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ARCHS = (80, 86, 89, 90)
DTYPES = ("float32", "float16", "bfloat16")
# (name, B, H, W, G, C, output rows, output columns, radius): the shapes that select every
# specialisation and dispatch path: 4 and 16 Gaussians per LR pixel (the latter at x8,
# where a cell has more columns than one thread holds), odd sizes at a non-integer scale
# with the model's 4 channels (colour + weight sum), G = 1 and C = 1 at x1 (one pixel
# per cell), radius 2, a 1x1 image, a batch of 2.
CASES = (
    ("x4 G=4 B=2", 2, 9, 11, 4, 3, 36, 44, 1),
    ("x8 G=16 C=4", 1, 3, 4, 16, 4, 24, 32, 1),
    ("x4 G=16", 1, 9, 11, 16, 3, 36, 44, 1),
    ("odd x3.7 C=4", 1, 7, 5, 4, 4, 26, 19, 1),
    ("G=1 C=1 x1", 1, 13, 17, 1, 1, 13, 17, 1),
    ("radius 2", 1, 5, 5, 4, 3, 10, 10, 2),
    ("1x1 x4", 1, 1, 1, 4, 3, 4, 4, 1),
)


def _launches(case, dtype_name):
    """The forward and backward launches the wrapper builds for one case, on the CPU."""
    import torch
    from gsasr_kernels import GaussianField, axis_map
    from gsasr_kernels import triton_rasterize as tr

    _, b, h, w, g, c, ho, wo, r = case
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    shape = (b, h, w, g)
    field = GaussianField(
        torch.rand(*shape, 2, generator=gen).to(dtype),
        (0.08 + 0.67 * torch.rand(*shape, 2, generator=gen)).to(dtype),
        (1.8 * torch.rand(*shape, generator=gen) - 0.9).to(dtype),
        torch.rand(*shape, generator=gen).to(dtype),
        torch.randn(*shape, c, generator=gen).to(dtype),
    )
    samples = tr.Samples.of(axis_map(ho, ho / h, h), axis_map(wo, wo / w, w), h, w, "cpu")
    out, fwd = tr._fwd_launches(field, samples, r)
    _, bwd = tr._bwd_launches(field, samples, r, torch.ones_like(out))
    return fwd + bwd


def check(job: tuple[int, tuple]) -> list[tuple]:
    """Compile one case for one target, every dtype, kernel and config: rows (arch, case,
    dtype, kernel, config, registers, shared bytes, problems)."""
    from cubin import compile_launch, jit_function, over_limits, resources

    arch, case = job
    rows, seen = [], {}
    for dtype_name in DTYPES:
        for launch in _launches(case, dtype_name):
            fn = jit_function(launch.kernel).fn
            for config in launch.configs:
                name, source = fn.__name__, fn.__code__.co_filename
                cfg = ", ".join(f"{k}={v}" for k, v in config.kwargs.items())
                cfg += f", warps={config.num_warps}"
                try:
                    kernel = compile_launch(launch, config, arch)
                except Exception as e:  # noqa: BLE001 - any compile failure fails CI
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    rows.append((arch, case[0], dtype_name, name, cfg, "-", "-", [first]))
                    continue
                if id(kernel) not in seen:  # Triton's cache returns the same object
                    seen[id(kernel)] = resources(kernel, source, sass=False)
                res = seen[id(kernel)]
                why = over_limits(res, arch, config.num_warps)
                rows.append((arch, case[0], dtype_name, name, cfg, res.regs, res.shared, why))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", type=int, nargs="+", default=list(ARCHS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every compilation")
    args = ap.parse_args()
    start = time.perf_counter()
    jobs = [(arch, case) for arch in args.archs for case in CASES]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = [row for part in pool.map(check, jobs) for row in part]
    failed = [row for row in rows if row[-1]]
    worst: dict[tuple, tuple] = {}
    for row in rows:
        key = (row[0], row[3])
        if isinstance(row[5], int) and (key not in worst or row[5] > worst[key][5]):
            worst[key] = row
    print(
        f"{len(rows)} compilations ({len(args.archs)} targets x {len(CASES)} cases x "
        f"{len(DTYPES)} dtypes x kernels x configs) in {time.perf_counter() - start:.0f} s"
    )
    print("most registers per kernel and target:")
    for (arch, kernel), row in sorted(worst.items()):
        print(
            f"  sm_{arch} {kernel}: {row[5]} registers, {row[6]} B shared ({row[1]}, "
            f"{row[2]}, {row[4]})"
        )
    for row in rows if args.verbose else failed:
        arch, case, dtype, kernel, cfg, regs, smem, why = row
        status = "; ".join(why) if why else "ok"
        print(
            f"{'FAIL' if why else 'ok  '} sm_{arch} {case:<14} {dtype:<8} {kernel} ({cfg}): "
            f"{regs} regs, {smem} B shared: {status}"
        )
    if failed:
        print(f"{len(failed)} of {len(rows)} compilations failed")
        return 1
    print("all compile, within limits, without spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
