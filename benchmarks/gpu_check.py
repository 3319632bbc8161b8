"""The measurements of `gpu_check.sh`, one subcommand each; `--dry-run` runs the same code
on the CPU at toy sizes and says that it measured nothing.

    python benchmarks/gpu_check.py tiling    --out DIR [--dry-run]
    python benchmarks/gpu_check.py precision --out DIR --val ../shared/data/val [--dry-run]
    python benchmarks/gpu_check.py kernels   --out DIR --estimates DIR [--dry-run]
    python benchmarks/gpu_check.py e2e       --out DIR [--dry-run]

Each prints a Markdown table and writes it to DIR/<subcommand>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DRY_NOTE = "DRY RUN on the CPU at toy sizes: plumbing checked, nothing here is a measurement."


def _write(out_dir: str, name: str, lines: list[str], dry: bool) -> None:
    text = "\n".join(([DRY_NOTE, ""] if dry else []) + lines) + "\n"
    print(text)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(text)


def _device(dry: bool) -> str:
    import torch

    if dry:
        return "cpu"
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run to check the plumbing only")
    return "cuda"


def _val_images(val: str, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    names = sorted(n for n in os.listdir(val) if n.lower().endswith(".png"))[:limit]
    return [(n, np.asarray(Image.open(os.path.join(val, n)).convert("RGB"))) for n in names]


def tiling(args) -> None:
    """Tiled against untiled output of the shipped model on CUDA: the largest difference."""
    import torch

    from gsasr_cli import load_model, upscale

    dev = _device(args.dry_run)
    model = load_model(device=dev)
    rng = np.random.default_rng(0)
    side = 24 if args.dry_run else 300
    img = rng.random((side, side + 7, 3), dtype=np.float32)  # float in, float out: no rounding
    lines = [
        "| scale | input | tile | output | max abs diff vs untiled | equal |",
        "|---|---|---|---|---|---|",
    ]
    for scale in (3.7,) if args.dry_run else (2.0, 3.7, 4.0):
        whole = upscale(img, scale=scale, model=model, tile=0)
        for tile in (16,) if args.dry_run else (64, 128):
            part = upscale(img, scale=scale, model=model, tile=tile)
            diff = float(np.abs(part - whole).max())
            lines.append(
                f"| x{scale:g} | {img.shape[1]}x{img.shape[0]} | {tile} | "
                f"{whole.shape[1]}x{whole.shape[0]} | {diff:.3g} | {bool(diff == 0)} |"
            )
    lines.append(f"\ndevice: {torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}")
    _write(args.out, "tiling", lines, args.dry_run)


def precision(args) -> None:
    """fp16 and bf16 network against fp32 on the validation photos, x4: PSNR between the
    outputs (RGB, 8-bit) and each one's Y-PSNR against the original."""
    from PIL import Image

    from gsasr_cli import load_model, upscale
    from gsasr_cli.metrics import psnr_y

    dev = _device(args.dry_run)
    model = load_model(device=dev)
    images = _val_images(args.val, 1 if args.dry_run else None)
    modes = ("fp32",) if args.dry_run else ("fp32", "fp16", "bf16")
    lines = [
        "| image | LR | "
        + " | ".join(f"{m} Y-PSNR" for m in modes)
        + "".join(f" | {m} vs fp32 PSNR | {m} max diff" for m in modes[1:])
        + " |",
        "|---|---|" + "---|" * (len(modes) + 2 * (len(modes) - 1)),
    ]
    for name, hr in images:
        h, w = (s // 4 * 4 for s in hr.shape[:2])
        hr = hr[:h, :w]
        if args.dry_run:
            hr = hr[:64, :64]
            h, w = hr.shape[:2]
        lr = np.asarray(Image.fromarray(hr).resize((w // 4, h // 4), Image.BICUBIC))
        outs = {m: upscale(lr, size=(w, h), model=model, precision=m) for m in modes}
        cells = [f"{psnr_y(outs[m], hr, 4):.2f}" for m in modes]
        for m in modes[1:]:
            a, b = outs[m].astype(np.float64), outs["fp32"].astype(np.float64)
            mse = float(np.mean((a - b) ** 2))
            cells.append("inf" if mse == 0 else f"{10 * np.log10(255**2 / mse):.1f}")
            cells.append(f"{int(np.abs(a - b).max())}")
        lines.append(f"| {name} | {w // 4}x{h // 4} | " + " | ".join(cells) + " |")
    if args.dry_run:
        lines.append("\nfp16/bf16 need CUDA: only fp32 ran.")
    _write(args.out, "precision", lines, args.dry_run)


def _time_ms(fn, cuda: bool) -> tuple[float, float, float]:
    if cuda:
        import triton.testing

        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8]))
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), min(times), max(times)


def _measure(field, rows, cols, cuda: bool):
    """((triton fwd, bwd), (torch fwd, bwd)) times, each (median, p20, p80) ms."""
    import torch
    from gsasr_kernels import GaussianField
    from gsasr_kernels import triton_rasterize as tr
    from gsasr_kernels._torch_impl import _rasterize

    _, h, w, _ = field.shape
    samples = tr.Samples.of(rows, cols, h, w, field.means.device)
    v = torch.randn_like(tr._fwd(field, samples, 1))
    triton = (
        _time_ms(lambda: tr._fwd(field, samples, 1), cuda),
        _time_ms(lambda: tr._bwd(field, samples, 1, v), cuda),
    )
    leaves = [t.detach().requires_grad_() for t in field.tensors()]
    rows, cols = rows.to(field.means.device), cols.to(field.means.device)
    try:
        with torch.no_grad():
            r_fwd = _time_ms(lambda: _rasterize(field, rows, cols, 1), cuda)
        ref = _rasterize(GaussianField(*leaves), rows, cols, 1)
        r_bwd = _time_ms(lambda: torch.autograd.grad(ref, leaves, v, retain_graph=True), cuda)
    except torch.cuda.OutOfMemoryError:
        r_fwd = r_bwd = (float("nan"),) * 3
    return triton, (r_fwd, r_bwd)


def kernels(args) -> None:
    """The launch helpers `_fwd` and `_bwd` at 4K x4 against the PyTorch reference, and
    against the static report's estimate and roofline (H100 issue rates: the H200 has the
    same SMs and clocks)."""
    import torch

    sys.path.insert(0, HERE)
    import static_report as sr
    from gsasr_kernels import GaussianField, axis_map
    from gsasr_kernels import triton_rasterize as tr

    dev = _device(args.dry_run)
    cuda = dev == "cuda"
    lines = [
        "| G | pass | triton ms (p20-p80) | static estimate ms | roofline ms | measured / estimate "
        "| torch ms | torch / triton |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for grid in (2, 4):
        est = {}
        path = os.path.join(args.estimates, f"static_estimate_g{grid * grid}.json")
        if os.path.exists(path):
            with open(path) as f:
                est = {r["pass"]: r for r in json.load(f) if r["arch"] == 90}
        field, rows, cols = sr.problem(grid)
        if args.dry_run:  # a corner of the 4K case
            field, h, w = field.crop(0, 6, 0, 9), 6, 9
            rows, cols = axis_map(24, 4.0, h), axis_map(36, 4.0, w)
        field = GaussianField(*(t.to(dev).contiguous() for t in field.tensors()))
        (t_fwd, t_bwd), (r_fwd, r_bwd) = _measure(field, rows, cols, cuda)
        for pas, t, r in (("fwd", t_fwd, r_fwd), ("bwd", t_bwd, r_bwd)):
            e = est.get(pas, {})
            e_ms, roof = e.get("estimate_ms", float("nan")), e.get("roofline_ms", float("nan"))
            lines.append(
                f"| {grid * grid} | {pas} | {t[0]:.3f} ({t[1]:.3f}-{t[2]:.3f}) | {e_ms:.3f} "
                f"| {roof:.3f} | {t[0] / e_ms:.2f} | {r[0]:.3f} | {r[0] / t[0]:.1f} |"
            )
        if cuda:
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)"
    _, h, w, _ = field.shape  # the last case's
    lines.append(
        f"\ndevice: {name}; case: {len(cols)}x{len(rows)} from {w}x{h}, x4, C=3, R=1, fp32"
    )
    for kernel in (tr._fwd_kernel, tr._bwd_kernel):
        lines.append(f"autotuned {kernel.fn.__name__}: {getattr(kernel, 'cache', {})}")
    _write(args.out, "kernels", lines, args.dry_run)


def _poll_gpu_memory(stop: threading.Event, peak: list[int]) -> None:
    """Peak used memory on the device, from nvidia-smi every 0.2 s (context included)."""
    while not stop.is_set():
        try:
            used = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.split()
            peak[0] = max(peak[0], int(used[0]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return
        stop.wait(0.2)


def e2e(args) -> None:
    """`gsasr upscale` end to end (fresh process: start-up, model load, read, tiles,
    write) of a 3840x2160 output and of a 2048x2048 input at x4, with peak GPU memory."""
    from PIL import Image

    dev = _device(args.dry_run)
    cases = ((96, 54), (64, 64)) if args.dry_run else ((960, 540), (2048, 2048))
    val = _val_images(args.val, 1)[0][1]
    lines = [
        "| input | output | file | wall s | torch peak allocated MB | torch peak reserved MB "
        "| device peak used MB (nvidia-smi) | exit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w, h in cases:
        src = os.path.join(args.out, f"e2e_in_{w}x{h}.png")
        Image.fromarray(val).resize((w, h), Image.BICUBIC).save(src)
        dst = os.path.join(args.out, f"e2e_out_{w}x{h}_x4.{'png' if w * h < 1e6 else 'bmp'}")
        stats = os.path.join(args.out, f"e2e_{w}x{h}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "_cli", stats, "--", "upscale", src]
        cmd += ["--scale", "4", "-o", dst, "--overwrite", "--device", dev]
        stop, peak = threading.Event(), [0]
        poller = threading.Thread(target=_poll_gpu_memory, args=(stop, peak), daemon=True)
        if dev == "cuda":
            poller.start()
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        stop.set()
        s = json.load(open(stats)) if os.path.exists(stats) else {}
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
        lines.append(
            f"| {w}x{h} | {4 * w}x{4 * h} | {os.path.basename(dst)} | {wall:.1f} "
            f"| {s.get('allocated_mb', 'n/a')} | {s.get('reserved_mb', 'n/a')} "
            f"| {peak[0] or 'n/a'} | {done.returncode} |"
        )
        for path in (src, dst):
            if os.path.exists(path):
                os.remove(path)
    _write(args.out, "e2e", lines, args.dry_run)


def _cli(argv: list[str]) -> int:
    """Run the CLI in this process, then record torch's peak CUDA memory."""
    stats, rest = argv[0], argv[2:]  # argv[1] is "--"
    import torch

    sys.argv = ["gsasr", *rest]
    code = 0
    try:
        from gsasr_cli.cli import main

        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        mb = {}
        if torch.cuda.is_available():
            mb = {
                "allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                "reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20),
            }
        with open(stats, "w") as f:
            json.dump(mb, f)
    return code


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_cli":
        sys.exit(_cli(sys.argv[2:]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["tiling", "precision", "kernels", "e2e"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--val", default=os.path.join(HERE, "..", "..", "shared", "data", "val"))
    ap.add_argument("--estimates", default=None, help="folder of static_estimate_g*.json")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    args.estimates = args.estimates or args.out
    os.makedirs(args.out, exist_ok=True)
    {"tiling": tiling, "precision": precision, "kernels": kernels, "e2e": e2e}[args.step](args)


if __name__ == "__main__":
    main()
