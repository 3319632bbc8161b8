"""MATLAB-style bicubic resizing (`imresize`), by output size, in PyTorch.

The degradation of the SR literature: a cubic kernel (a = -0.5), widened by 1/scale
when shrinking (antialiasing), symmetric edge handling, and sample positions
u = (x + 0.5) / scale - 0.5 per axis. Written as one dense [out, in] matrix per axis,
so a resize is two matrix products, exact for any non-integer scale.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def _cubic(x: Tensor) -> Tensor:
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, antialias: bool = True) -> Tensor:
    """The [n_out, n_in] float64 matrix that resizes one axis."""
    scale = n_out / n_in
    shrink = antialias and scale < 1
    width = 4.0 / scale if shrink else 4.0
    x = torch.arange(n_out, dtype=torch.float64)
    u = (x + 0.5) / scale - 0.5  # sample position in input pixel indices (0-based centres)
    left = torch.floor(u - width / 2) + 1
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric padding: ... 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...
    period = 2 * n_in
    idx = torch.remainder(idx.to(torch.int64), period)
    idx = torch.where(idx < n_in, idx, period - 1 - idx)
    rows = torch.arange(n_out)[:, None].expand_as(idx)
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    matrix.index_put_((rows.reshape(-1), idx.reshape(-1)), weights.reshape(-1), accumulate=True)
    return matrix


def imresize(image: Tensor, out_h: int, out_w: int, antialias: bool = True) -> Tensor:
    """Resize `image` [..., H, W] (float) to [..., out_h, out_w] with MATLAB's bicubic."""
    h, w = image.shape[-2:]
    my = resize_matrix(h, out_h, antialias).to(image)
    mx = resize_matrix(w, out_w, antialias).to(image)
    return my @ image @ mx.T
