"""Weights side by side, each with the palette clamp (as `gsasr` runs them) and without it:
`gsasr eval`'s protocol and scales on a folder, all in one run, so that the seconds per
image compare on a shared machine and the clamp's effect on photographs shows.

    python benchmarks/eval_weights.py ../shared/data/val OLD.safetensors NEW.safetensors
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from gsasr_cli import model as model_module
from gsasr_cli.evaluate import TABLE_SCALES, Method, evaluate, gsasr_method, summarise
from gsasr_cli.jobs import list_images
from gsasr_cli.weights_io import load_model


@contextmanager
def clamp_off() -> Iterator[None]:
    """Inside the block no LR pixel is graphics, so the palette clamp bounds nothing."""
    keep = model_module.PALETTE_COLOURS
    model_module.PALETTE_COLOURS = 0
    try:
        yield
    finally:
        model_module.PALETTE_COLOURS = keep


def without_clamp(run: Method) -> Method:
    def unclamped(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        with clamp_off():
            return run(lr, size)

    return unclamped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("weights", type=Path, nargs="+", help="weights files, the reference first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--clamped-only", action="store_true", help="only as gsasr runs them (half the time)"
    )
    ap.add_argument(
        "--scales",
        type=lambda text: [float(x) for x in text.split(",")],
        default=list(TABLE_SCALES),
        help="comma-separated scales [default: gsasr eval's 8]",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods: dict[str, Method] = {}
    for i, path in enumerate(args.weights):
        run = gsasr_method(load_model(path))
        methods[f"{i}"] = run
        if not args.clamped_only:
            methods[f"{i} no clamp"] = without_clamp(run)
    variants = [""] if args.clamped_only else ["", " no clamp"]
    summary = summarise(evaluate(list_images(args.folder), args.scales, methods))
    print(f"\n{args.folder}: mean Y-PSNR in dB (seconds per image); weights:")
    for i, path in enumerate(args.weights):
        print(f"- {i}: {path}")
    head = " | ".join(f"{i}{v}" for i in range(len(args.weights)) for v in variants)
    print(f"\n| scale | {head} | {' | '.join(f'{i} - 0' for i in range(1, len(args.weights)))} |")
    print("|---" * ((len(variants) + 1) * len(args.weights)) + "|")
    for scale, row in summary.items():
        cells = [
            f"{row[m]['psnr']:.4f} ({row[m]['seconds']:.2f} s)"
            for i in range(len(args.weights))
            for m in (f"{i}{v}" for v in variants)
        ]
        ref = row["0"]
        deltas = [
            f"{row[f'{i}']['psnr'] - ref['psnr']:+.4f} dB, "
            f"{row[f'{i}']['seconds'] / ref['seconds']:.2f}x time"
            for i in range(1, len(args.weights))
        ]
        print(f"| x{scale:g} | {' | '.join(cells + deltas)} |")


if __name__ == "__main__":
    main()
