"""Where each output pixel lies on the low-resolution grid.

Output pixel j (along one axis) samples the LR coordinate u = (j + 0.5) / s, where LR
pixel i covers [i, i + 1). A rasterizer needs, per output row and column, the LR cell
that holds u and the position of u inside that cell. Both are computed here once, in
float64, from *global* indices, so a tile of the output and the whole output see
bit-identical coordinates: this is what makes tiled rendering exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AxisMap:
    """Output samples along one axis, located on the LR grid."""

    cell: Tensor  # [n] int64, LR cell index, local to the Gaussian tensor
    frac: Tensor  # [n] float64, position inside that cell, in [0, 1]

    def __len__(self) -> int:
        return self.cell.numel()

    def to(self, device: torch.device | str) -> AxisMap:
        """The same map on another device."""
        return AxisMap(self.cell.to(device), self.frac.to(device))

    def take(self, index: Tensor) -> AxisMap:
        """The samples at `index` ([n] int64, increasing, so cells stay in order)."""
        return AxisMap(self.cell[index], self.frac[index])


def axis_map(
    n_out: int,
    scale: float,
    lr_size: int,
    *,
    out_start: int = 0,
    lr_start: int = 0,
) -> AxisMap:
    """Map output samples `out_start .. out_start + n_out - 1` of an axis scaled by `scale`.

    `lr_size` is the full LR length of the axis (cells past it hold no Gaussians);
    `lr_start` is the global index of the first cell of the Gaussian tensor, so that
    `cell` indexes that tensor directly.
    """
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    j = torch.arange(out_start, out_start + n_out, dtype=torch.float64)
    u = (j + 0.5) / scale
    cell = torch.floor(u).clamp_(0, lr_size - 1)
    frac = u - cell
    return AxisMap(cell.to(torch.int64) - lr_start, frac)
