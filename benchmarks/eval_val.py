"""Quality on the validation photos: bicubic against gsasr, Y-PSNR / SSIM per scale.

    python benchmarks/eval_val.py [--val ../shared/data/val] [--weights FILE] [--scales 2 3 4]

Protocol: HR cropped so that the LR size is an integer (LR = floor(HR / s)), LR made
by MATLAB bicubic with antialiasing and quantised to 8 bits, output rendered at exactly
the HR size, quantised to 8 bits; Y channel (BT.601), border shave ceil(s).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gsasr_cli.imageio import read_image
from gsasr_cli.metrics import psnr_y, ssim_y
from gsasr_cli.resize import imresize
from gsasr_cli.upscale import upscale_rgb
from gsasr_cli.weights_io import default_weights_path, load_model


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.clip(rgb, 0, 1) * 255.0), 0, 255).astype(np.uint8)


def make_pair(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(HR crop, LR as float in [0, 1] quantised to 8 bits) from a uint8 HR image."""
    h, w = hr.shape[:2]
    lh, lw = math.floor(h / scale), math.floor(w / scale)
    hh, hw = round(lh * scale), round(lw * scale)
    crop = hr[:hh, :hw]
    t = torch.from_numpy(crop).permute(2, 0, 1).double() / 255.0
    lr = imresize(t, lh, lw).clamp(0, 1)
    lr = (torch.round(lr * 255) / 255).permute(1, 2, 0).float().numpy()
    return crop, lr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val", type=Path, default=Path("../shared/data/val"))
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--per-image", action="store_true", help="also print every image's PSNR")
    args = ap.parse_args()

    device = torch.device("cpu")
    weights = args.weights or default_weights_path()
    model = load_model(weights, device)
    paths = sorted(p for p in args.val.iterdir() if p.suffix.lower() in {".png", ".bmp", ".tif"})
    rows = []
    print(f"# {len(paths)} images in {args.val}; weights {weights}")
    print(
        f"# machine: {platform.machine()} {platform.processor() or ''}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for scale in args.scales:
        shave = math.ceil(scale)
        res: dict[str, list[float]] = {
            k: [] for k in ("bic_psnr", "bic_ssim", "psnr", "ssim", "sec")
        }
        for path in paths:
            hr_u8, lr = make_pair(to_uint8(read_image(path).rgb), scale)
            hh, hw = hr_u8.shape[:2]
            sy, sx = hh / lr.shape[0], hw / lr.shape[1]
            t = torch.from_numpy(lr).permute(2, 0, 1).double()
            bic = to_uint8(imresize(t, hh, hw).permute(1, 2, 0).numpy())
            start = time.perf_counter()
            ours = to_uint8(upscale_rgb(model, lr, (hh, hw), (sy, sx), device))
            res["sec"].append(time.perf_counter() - start)
            res["bic_psnr"].append(psnr_y(bic, hr_u8, shave))
            res["bic_ssim"].append(ssim_y(bic, hr_u8, shave))
            res["psnr"].append(psnr_y(ours, hr_u8, shave))
            res["ssim"].append(ssim_y(ours, hr_u8, shave))
            if args.per_image:
                print(
                    f"  x{scale:g} {path.name:28s} bicubic {res['bic_psnr'][-1]:6.2f}  "
                    f"gsasr {res['psnr'][-1]:6.2f}"
                )
        rows.append((scale, {k: statistics.fmean(v) for k, v in res.items()}))
        print(f"  x{scale:g} done", file=sys.stderr)

    print()
    print("| scale | bicubic PSNR | bicubic SSIM | gsasr PSNR | gsasr SSIM | gain dB | s/image |")
    print("|---|---|---|---|---|---|---|")
    for scale, m in rows:
        print(
            f"| x{scale:g} | {m['bic_psnr']:.2f} | {m['bic_ssim']:.4f} | {m['psnr']:.2f} | "
            f"{m['ssim']:.4f} | {m['psnr'] - m['bic_psnr']:+.2f} | {m['sec']:.2f} |"
        )


if __name__ == "__main__":
    main()
