"""Turn a trained model into a bigger or newer one that starts where it left off."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from .model import GSASR, ModelConfig, ScaledBlock

# The opacity's place among a Gaussian's raw outputs: mean (2), sigma (2), rho, opacity,
# colour (3).
_OPACITY = 5


def grow(model: GSASR, target: ModelConfig, *, seed: int = 0, noise: float = 1e-3) -> GSASR:
    """`model` rebuilt as `target`: more decoder blocks, a finer Gaussian grid, and/or
    another colour or rendering mode, keeping everything it learnt.

    New blocks go in front, their second convolution at zero, so they start as the
    identity. A finer grid splits every Gaussian into (grid / old grid)^2 children with
    its mean, shape and colour, and each 1/n of its opacity (exact to first order around
    the calibrated opacity), plus `noise` on the children's head weights, which lets them
    part. The colour modes share the head's outputs (only their use differs).
    With nothing changed the grown model renders exactly what `model` renders.
    Raises ValueError for a target that would shrink or cannot split evenly.
    """
    cfg = model.cfg
    fixed = ("n_feats", "n_resblocks", "radius", "sigma_min", "sigma_max")
    if any(getattr(cfg, f) != getattr(target, f) for f in fixed):
        raise ValueError(
            f"grow changes only decoder_blocks, grid, color and render ({fixed} fixed)"
        )
    if target.decoder_blocks < cfg.decoder_blocks or target.grid % cfg.grid:
        raise ValueError(
            f"cannot shrink or regrid {cfg.decoder_blocks} blocks / grid {cfg.grid} to "
            f"{target.decoder_blocks} / {target.grid}: blocks may only grow and the grid "
            "only by a whole factor"
        )
    grown = GSASR(target)
    grown.encoder.load_state_dict(model.encoder.state_dict())
    new, f = target.decoder_blocks - cfg.decoder_blocks, cfg.n_feats
    for i, block in enumerate(model.decoder.blocks):
        grown.decoder.blocks[new + i].load_state_dict(block.state_dict())
    for block in list(grown.decoder.blocks)[:new]:
        conv2 = cast(ScaledBlock, block).conv2
        nn.init.zeros_(conv2.weight)
        nn.init.zeros_(conv2.bias)  # type: ignore[arg-type]  # Conv2d has a bias here
    src, dst = model.decoder.scale_mlp, grown.decoder.scale_mlp
    dst[0].load_state_dict(src[0].state_dict())
    src_out, dst_out = cast(nn.Linear, src[2]), cast(nn.Linear, dst[2])
    with torch.no_grad():  # the bias rows of the old blocks move behind the new ones
        dst_out.weight[new * f :] = src_out.weight
        dst_out.bias[new * f :] = src_out.bias
        _split_head(model, grown, noise, torch.Generator().manual_seed(seed))
    return grown


def _split_head(old: GSASR, new: GSASR, noise: float, gen: torch.Generator) -> None:
    n = new.cfg.grid // old.cfg.grid
    k_old, k_new = old.cfg.params_per_gaussian, new.cfg.params_per_gaussian
    assert k_old == k_new
    old_head, new_head = old.decoder.head, new.decoder.head
    assert old_head.bias is not None and new_head.bias is not None
    w_old = old_head.weight.view(old.cfg.gaussians_per_pixel, k_old, -1)
    b_old = old_head.bias.view(old.cfg.gaussians_per_pixel, k_old)
    w_new = new_head.weight.view(new.cfg.gaussians_per_pixel, k_new, -1)
    b_new = new_head.bias.view(new.cfg.gaussians_per_pixel, k_new)
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
            w_new[child] = w_old[parent]  # every colour mode has the same outputs
            b_new[child] = b_old[parent]
            # The same mean: shift the offset by the difference of the cell-centre logits.
            b_new[child, 0:2] += old.centre_logit[parent] - new.centre_logit[child]
            w_new[child, _OPACITY] *= slope
            b_new[child, _OPACITY] = (
                slope * b_old[parent, _OPACITY] + z0_child - float(new.opacity_bias)
            )
            if noise and n > 1:
                w_new[child] += noise * torch.randn(w_new[child].shape, generator=gen)
