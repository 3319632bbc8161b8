"""Train the Gaussian decoder (and optionally fine-tune the encoder) on LR/HR patches.

    python -m gsasr_cli.train --data data/train --liif-encoder edsr-baseline-liif.pth \
        --steps 6000 --out runs/first

Samples: an HR crop of round(p * s) pixels per axis with s ~ U(smin, smax), random
flips and transposes, shrunk to p x p with MATLAB bicubic (antialiased) and quantised
to 8 bits, as real LR images are. Loss: L1 between the render and the HR crop. Adam
with a cosine schedule; an EMA of the weights is what gets exported. Resumable: the
run folder keeps the latest checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from gsasr_kernels import axis_map
from torch import nn

from .imageio import FORMATS
from .model import _K, GSASR, ModelConfig
from .resize import imresize
from .weights_io import load_model, save_weights


def load_images(folder: Path) -> list[np.ndarray]:
    """All images of `folder` as RGB uint8 arrays."""
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder (build it with scripts/build_dataset.py)")
    images = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in FORMATS:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                images.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    if not images:
        raise SystemExit(f"{folder}: no training images")
    return images


class PatchSampler:
    """Random (LR, HR, scale) batches from a list of images; one scale per batch."""

    def __init__(
        self,
        images: list[np.ndarray],
        patch: int,
        batch: int,
        scale_range: tuple[float, float],
        anisotropic: float,
        seed: int,
    ) -> None:
        self.images = images
        self.patch, self.batch = patch, batch
        self.scale_range, self.anisotropic = scale_range, anisotropic
        self.rng = random.Random(seed)
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.weights = (areas / areas.sum()).tolist()

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
        rng, p = self.rng, self.patch
        sy = rng.uniform(*self.scale_range)
        sx = rng.uniform(*self.scale_range) if rng.random() < self.anisotropic else sy
        hh, wh = round(p * sy), round(p * sx)
        crops = []
        for _ in range(self.batch):
            transpose = rng.random() < 0.5
            ch, cw = (wh, hh) if transpose else (hh, wh)
            while True:
                image = rng.choices(self.images, weights=self.weights)[0]
                if image.shape[0] >= ch and image.shape[1] >= cw:
                    break
            y = rng.randrange(image.shape[0] - ch + 1)
            x = rng.randrange(image.shape[1] - cw + 1)
            crop = image[y : y + ch, x : x + cw]
            if transpose:
                crop = crop.transpose(1, 0, 2)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if rng.random() < 0.5:
                crop = crop[::-1]
            crops.append(np.ascontiguousarray(crop))
        hr = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
        lr = imresize(hr, p, p).clamp(0, 1)
        lr = torch.round(lr * 255.0) / 255.0
        return lr, hr, (hh / p, wh / p)


def load_liif_encoder(model: GSASR, path: Path) -> None:
    """Copy LIIF's pretrained EDSR-baseline encoder (`model.sd`, `encoder.*`) into `model`."""
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]["sd"]
    enc = {
        k[len("encoder.") :]: v
        for k, v in sd.items()
        if k.startswith("encoder.") and "mean." not in k
    }
    model.encoder.load_state_dict(enc, strict=True)


def grow(model: GSASR, blocks: int, grid: int, seed: int = 0, noise: float = 1e-3) -> GSASR:
    """`model` with `blocks` decoder blocks and `grid`^2 Gaussians per LR pixel.

    New blocks go in front, their second convolution at zero, so they start as the
    identity. A finer grid splits every Gaussian into (grid / old grid)^2 children
    with its mean, shape and colour, and each 1/n of its opacity (exact to first order
    around the calibrated opacity), plus `noise` on the children's head weights, which
    lets them part.
    With the same grid the grown model renders exactly what `model` renders.
    """
    cfg = model.cfg
    if blocks < cfg.decoder_blocks or grid < cfg.grid or grid % cfg.grid:
        raise SystemExit(
            f"cannot shrink or regrid {cfg.decoder_blocks} blocks / grid {cfg.grid} "
            f"to {blocks} / {grid}: blocks may only grow and the grid only by a whole factor"
        )
    grown = GSASR(replace(cfg, decoder_blocks=blocks, grid=grid))
    grown.encoder.load_state_dict(model.encoder.state_dict())
    new, f = blocks - cfg.decoder_blocks, cfg.n_feats
    for i, block in enumerate(model.decoder.blocks):
        grown.decoder.blocks[new + i].load_state_dict(block.state_dict())
    for block in list(grown.decoder.blocks)[:new]:
        nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(block.conv2.bias)
    src, dst = model.decoder.scale_mlp, grown.decoder.scale_mlp
    dst[0].load_state_dict(src[0].state_dict())
    with torch.no_grad():  # the bias rows of the old blocks move behind the new ones
        dst[2].weight[new * f :] = src[2].weight
        dst[2].bias[new * f :] = src[2].bias
        _split_head(model, grown, noise, torch.Generator().manual_seed(seed))
    return grown


def _split_head(old: GSASR, new: GSASR, noise: float, gen: torch.Generator) -> None:
    k, n = _K, new.cfg.grid // old.cfg.grid
    w_old = old.decoder.head.weight.view(old.cfg.gaussians_per_pixel, k, -1)
    b_old = old.decoder.head.bias.view(old.cfg.gaussians_per_pixel, k)
    w_new = new.decoder.head.weight.view(new.cfg.gaussians_per_pixel, k, -1)
    b_new = new.decoder.head.bias.view(new.cfg.gaussians_per_pixel, k)
    # Opacity: sigmoid(z') should be sigmoid(z) / n^2 near the parent's calibrated z0.
    z0 = float(old.opacity_bias)
    a0 = torch.sigmoid(torch.tensor(z0, dtype=torch.float64)).item()
    target = a0 / n**2
    z0_child = math.log(target / (1 - target))
    slope = (a0 * (1 - a0) / n**2) / (target * (1 - target))
    for gy in range(new.cfg.grid):
        for gx in range(new.cfg.grid):
            child = gy * new.cfg.grid + gx
            parent = (gy // n) * old.cfg.grid + gx // n
            w_new[child] = w_old[parent]
            b_new[child] = b_old[parent]
            # The same mean: shift the offset by the difference of the cell-centre logits.
            b_new[child, 0:2] += old.centre_logit[parent] - new.centre_logit[child]
            w_new[child, 5] *= slope
            b_new[child, 5] = slope * (b_old[parent, 5]) + z0_child - float(new.opacity_bias)
            if n > 1 and noise:
                w_new[child] += noise * torch.randn(w_new[child].shape, generator=gen)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    ap = argparse.ArgumentParser(prog=prog, description="Train gsasr's Gaussian decoder.")
    ap.add_argument("--data", type=Path, default=Path("data/train"))
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, weights)")
    ap.add_argument("--liif-encoder", type=Path, help="LIIF edsr-baseline-liif.pth to start from")
    ap.add_argument("--init", type=Path, help="start from these gsasr weights (safetensors)")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--scale-min", type=float, default=1.0)
    ap.add_argument("--scale-max", type=float, default=4.0)
    ap.add_argument("--anisotropic", type=float, default=0.25, help="share of per-axis scales")
    ap.add_argument("--train-encoder", action="store_true", help="fine-tune the encoder too")
    ap.add_argument(
        "--grid",
        type=int,
        help="Gaussians per LR pixel = grid^2 [default: 2, or as --init]; with --init, "
        "a multiple of its grid splits each Gaussian",
    )
    ap.add_argument(
        "--decoder-blocks",
        type=int,
        help="decoder depth [default: 2, or as --init]; with --init, more blocks are "
        "added in front as the identity",
    )
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--save-every", type=int, default=500)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.init:
        model = load_model(args.init)
        blocks = args.decoder_blocks or model.cfg.decoder_blocks
        grid = args.grid or model.cfg.grid
        if (blocks, grid) != (model.cfg.decoder_blocks, model.cfg.grid):
            model = grow(model, blocks, grid, args.seed)
        model.train()
    else:
        model = GSASR(ModelConfig(grid=args.grid or 2, decoder_blocks=args.decoder_blocks or 2))
        if args.liif_encoder:
            load_liif_encoder(model, args.liif_encoder)
    model.to(device)
    model.encoder.requires_grad_(args.train_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.99))
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    start = 0
    ckpt_path = args.out / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        start = ckpt["step"]
        print(f"resumed from {ckpt_path} at step {start}", file=sys.stderr)

    sampler = PatchSampler(
        load_images(args.data),
        args.patch,
        args.batch,
        (args.scale_min, args.scale_max),
        args.anisotropic,
        args.seed + start,
    )

    def save(step: int) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
            },
            tmp,
        )
        tmp.replace(ckpt_path)
        save_weights(ema, args.out / "ema.safetensors", extra={"steps": str(step)})

    t0, losses = time.time(), []
    for step in range(start, args.steps):
        lr_now = args.min_lr + 0.5 * (args.lr - args.min_lr) * (
            1 + math.cos(math.pi * step / args.steps)
        )
        for group in opt.param_groups:
            group["lr"] = lr_now
        lr_img, hr, scale = sampler()
        lr_img, hr = lr_img.to(device), hr.to(device)
        if args.train_encoder:
            feat = model.encoder(lr_img)
        else:
            with torch.no_grad():
                feat = model.encoder(lr_img)
        field = model.decode(lr_img, feat, scale)
        out = model.render(
            field,
            axis_map(hr.shape[-2], scale[0], args.patch),
            axis_map(hr.shape[-1], scale[1], args.patch),
        )
        loss = (out - hr).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            rate = (done - start) / (time.time() - t0)
            eta = (args.steps - done) / rate
            print(
                f"step {done}/{args.steps} loss {np.mean(losses):.4f} lr {lr_now:.2e} "
                f"{rate:.2f} steps/s eta {eta / 60:.1f} min",
                file=sys.stderr,
                flush=True,
            )
            losses = []
        if done % args.save_every == 0 or done == args.steps:
            save(done)


if __name__ == "__main__":
    main()
