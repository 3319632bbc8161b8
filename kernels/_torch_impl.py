"""Pure-PyTorch reference rasterizer: the CPU path and the ground truth of every kernel.

Each LR cell (y, x) owns G Gaussians. Gaussian i has a mean m_i = (x, y) + mu_i with
mu_i in [0, 1]^2, standard deviations (sx, sy), correlation rho, opacity a and colour
c (C channels). An output pixel at LR coordinate p receives

    I(p) = sum_i  a_i c_i exp(-q_i / 2) w(|d_i|^2),     d_i = p - m_i,
    q_i  = (dx^2/sx^2 - 2 rho dx dy/(sx sy) + dy^2/sy^2) / (1 - rho^2),
    w(t) = (1 - t / R^2)^2 for t < R^2, else 0,

summed over the Gaussians of the (2R+1)^2 cells around p's own cell. The taper w makes
every Gaussian vanish smoothly within distance R of its mean; as the mean lies inside
its cell, that disc lies inside the gathered window, so the truncated sum equals the
full sum exactly: work is O(output pixels), and rendering is deterministic and
independent of how the output is tiled.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .coords import AxisMap
from .field import GaussianField


def _conic(sigmas: Tensor, rhos: Tensor) -> Tensor:
    """Inverse-covariance coefficients (A, B, C) with q = A dx^2 + 2 B dx dy + C dy^2."""
    sx, sy = sigmas.unbind(-1)
    inv = 1.0 / (1.0 - rhos * rhos)
    return torch.stack((inv / (sx * sx), -rhos * inv / (sx * sy), inv / (sy * sy)), dim=-1)


def _rasterize(
    field: GaussianField,  # [B, H, W, G, ...] parameters, C colour channels
    rows: AxisMap,  # Ho output rows
    cols: AxisMap,  # Wo output columns
    radius: int,
    chunk_pixels: int = 1 << 16,
) -> Tensor:  # [B, C, Ho, Wo]
    """Render the Gaussians at the output pixels given by `rows` x `cols`; differentiable."""
    means, sigmas, rhos, opacities, colors = field.tensors()
    b = means.shape[0]
    c = field.channels
    r = radius
    # Per-Gaussian parameters, packed so that one gather fetches all of them:
    # mean (2), conic (3), premultiplied colour (C). Padding with zero colour makes
    # cells outside the grid contribute nothing.
    packed = torch.cat((means, _conic(sigmas, rhos), opacities[..., None] * colors), dim=-1)
    packed = torch.nn.functional.pad(packed, (0, 0, 0, 0, r, r, r, r))
    inv_r2 = 1.0 / float(r * r)

    wo = len(cols)
    rows_per_chunk = max(1, chunk_pixels // max(1, wo))
    col_cell = cols.cell + r
    col_frac = cols.frac.to(means.dtype)
    out = []
    for start in range(0, len(rows), rows_per_chunk):
        row_cell = rows.cell[start : start + rows_per_chunk] + r
        row_frac = rows.frac[start : start + rows_per_chunk].to(means.dtype)
        acc = means.new_zeros(b, row_cell.numel(), wo, c)
        for oy in range(-r, r + 1):
            band = packed.index_select(1, row_cell + oy)  # [B, h, W+2R, G, K]
            dy = (row_frac - oy)[None, :, None, None] - band[..., 1]  # broadcast below
            for ox in range(-r, r + 1):
                p = band.index_select(2, col_cell + ox)  # [B, h, Wo, G, K]
                dyy = dy.index_select(2, col_cell + ox)
                dx = (col_frac - ox)[None, None, :, None] - p[..., 0]
                q = p[..., 2] * dx * dx + 2.0 * p[..., 3] * dx * dyy + p[..., 4] * dyy * dyy
                t = (dx * dx + dyy * dyy) * inv_r2
                taper = torch.clamp(1.0 - t, min=0.0) ** 2
                weight = torch.exp(-0.5 * q) * taper  # [B, h, Wo, G]
                acc = acc + torch.einsum("bhwg,bhwgc->bhwc", weight, p[..., 5:])
        out.append(acc)
    return torch.cat(out, dim=1).permute(0, 3, 1, 2)
