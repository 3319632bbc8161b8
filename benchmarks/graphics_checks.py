"""The graphics checks of `tests/test_graphics.py` as a table, with and without the palette
clamp, for the shipped weights and any others given: pixels off the blend of their
colours (line art, text, pixel art; bicubic's count beside), flat images' worst error.

    python benchmarks/graphics_checks.py [WEIGHTS ...] > benchmarks/results/graphics.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_graphics as tg  # noqa: E402  (the checks themselves, not a copy)
from eval_weights import clamp_off  # noqa: E402  (this folder is on sys.path)

from gsasr_cli.api import upscale  # noqa: E402
from gsasr_cli.model import GSASR  # noqa: E402
from gsasr_cli.weights_io import load_model  # noqa: E402


def checks(model: GSASR) -> dict[str, tuple[object, object]]:
    """Check name -> (gsasr's figure, bicubic's or '-')."""
    r: dict[str, tuple[object, object]] = {}
    for fg, bg in tg.PAIRS[:2]:
        for s in (2.0, 4.0):
            art = tg.line_art(40, 48, fg, bg)
            r[f"1-px lines {fg} on {bg}, x{s:g}: px > 48 off"] = tg.off_blend_counts(
                art, fg, bg, s, model
            )
    for s in (2.0, 3.0, 4.0):
        r[f"anti-aliased text, x{s:g}: px > 48 off"] = tg.off_blend_counts(
            tg.text_image(), *tg.TEXT_COLOURS, s, model
        )
    worst = 0
    for colour in tg.COLOURS:
        for h, w in tg.SIZES:
            rgb = np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()
            out = upscale(rgb, scale=3.7, model=model).astype(int)
            worst = max(worst, int(np.abs(out - np.array(colour)).max()))
    r["flat images (5 colours x 5 sizes from 1x1), x3.7: worst error, levels"] = (worst, 0)
    flat = np.full((20, 30, 3), (200, 100, 50), np.uint8)
    err = np.abs(upscale(flat, scale=4.0, model=model).astype(int) - (200, 100, 50)).max()
    r["flat 30x20 (200, 100, 50), x4: worst error, levels"] = (int(err), 0)
    one = upscale(np.array([[[200, 100, 50]]], np.uint8), scale=2.0, model=model)[0, 0]
    r["1x1 (200, 100, 50), x2: colour"] = (tuple(int(v) for v in one), "-")
    for seed in (7, 8, 9):
        r[f"4-colour sprite (seed {seed}), x4: px > 48 off 2-colour blends"] = tg.sprite_counts(
            seed, model
        )
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="*", help="weights files besides the shipped ones")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in ["shipped", *args.weights]:
        model = tg.SHIPPED if name == "shipped" else load_model(Path(name))
        clamped = checks(model)
        with clamp_off():
            free = checks(model)
        print(f"\n## {name} (render {model.cfg.render}, colour {model.cfg.color})\n")
        print("| check | without the clamp | with the clamp | bicubic |\n|---|---|---|---|")
        for k, (ours, bicubic) in clamped.items():
            print(f"| {k} | {free[k][0]} | {ours} | {bicubic} |")


if __name__ == "__main__":
    main()
