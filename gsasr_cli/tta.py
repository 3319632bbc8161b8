"""Geometric self-ensemble: the 8 flips and transposes of the input, one Gaussian field each.

The network is not equivariant to flips, so each transformed input gives a slightly
different field. Each field is mapped back to the original orientation (cells reordered,
means mirrored inside their cells, axes and correlation adjusted) and rendered at the
original output pixels; the renders are averaged before quantisation. Mapping the field
back rather than flipping the rendered image keeps every output pixel at its exact LR
coordinate (j + 0.5) / s, whatever the output size, so the ensemble stays exact under
tiling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .model import GaussianField


@dataclass(frozen=True)
class Transform:
    """Transpose (swap y and x) first, then flip rows and/or columns."""

    transpose: bool = False
    flip_y: bool = False
    flip_x: bool = False

    def image(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> transformed
        if self.transpose:
            x = x.transpose(-2, -1)
        dims = [d for d, f in ((-2, self.flip_y), (-1, self.flip_x)) if f]
        return (x.flip(dims) if dims else x).contiguous()

    def inverse_image(self, x: Tensor) -> Tensor:  # transformed [B, C, H, W] -> original
        dims = [d for d, f in ((-2, self.flip_y), (-1, self.flip_x)) if f]
        x = x.flip(dims) if dims else x
        return (x.transpose(-2, -1) if self.transpose else x).contiguous()

    def scale(self, scale: tuple[float, float]) -> tuple[float, float]:
        """(sy, sx) as seen by the transformed image."""
        return (scale[1], scale[0]) if self.transpose else scale

    def inverse_field(self, f: GaussianField) -> GaussianField:
        """A field predicted for the transformed image, in the original orientation."""
        means, sigmas, rhos = f.means, f.sigmas, f.rhos
        opacities, colors = f.opacities, f.colors
        dims = [d for d, flip in ((1, self.flip_y), (2, self.flip_x)) if flip]
        if dims:
            means, sigmas, rhos = means.flip(dims), sigmas.flip(dims), rhos.flip(dims)
            opacities, colors = opacities.flip(dims), colors.flip(dims)
            mirror = torch.tensor([self.flip_x, self.flip_y], device=means.device)
            means = torch.where(mirror, 1.0 - means, means)  # (x, y) inside the cell
            if self.flip_x != self.flip_y:
                rhos = -rhos
        if self.transpose:
            means, sigmas = means.transpose(1, 2).flip(-1), sigmas.transpose(1, 2).flip(-1)
            rhos, opacities = rhos.transpose(1, 2), opacities.transpose(1, 2)
            colors = colors.transpose(1, 2)
        return GaussianField(means, sigmas, rhos, opacities, colors)


IDENTITY = Transform()
# All 8 symmetries of the square, the identity first.
ENSEMBLE = tuple(
    Transform(t, fy, fx) for t in (False, True) for fy in (False, True) for fx in (False, True)
)
