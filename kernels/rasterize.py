"""Public rasterization entry point: checks shapes once, then picks the implementation."""

from __future__ import annotations

from torch import Tensor

from ._torch_impl import _rasterize
from .coords import AxisMap


def rasterizer_path(device_type: str) -> tuple[str, str]:
    """The implementation used for tensors on `device_type`, and why."""
    return "torch", "PyTorch reference rasterizer"


def _check(means: Tensor, sigmas: Tensor, rhos: Tensor, opacities: Tensor, colors: Tensor) -> None:
    lead = means.shape[:-1]
    if means.dim() != 5 or means.shape[-1] != 2:
        raise ValueError(f"means must be [B, H, W, G, 2], got {tuple(means.shape)}")
    expected = {
        "sigmas": (sigmas.shape, (*lead, 2)),
        "rhos": (rhos.shape, lead),
        "opacities": (opacities.shape, lead),
        "colors": (colors.shape[:-1], lead),
    }
    for name, (got, want) in expected.items():
        if tuple(got) != tuple(want):
            raise ValueError(f"{name} has shape {tuple(got)}, expected {tuple(want)}")


def rasterize(
    means: Tensor,  # [B, H, W, G, 2] (x, y) inside the cell, in [0, 1]
    sigmas: Tensor,  # [B, H, W, G, 2] (sx, sy) in LR pixels, sx, sy < radius
    rhos: Tensor,  # [B, H, W, G] correlation in (-1, 1)
    opacities: Tensor,  # [B, H, W, G]
    colors: Tensor,  # [B, H, W, G, C]
    rows: AxisMap,  # Ho output rows
    cols: AxisMap,  # Wo output columns
    radius: int = 1,
) -> Tensor:  # [B, C, Ho, Wo]
    """Render the additive sum of tapered Gaussians at the output pixels `rows` x `cols`."""
    _check(means, sigmas, rhos, opacities, colors)
    device = means.device
    rows, cols = rows.to(device), cols.to(device)
    return _rasterize(means, sigmas, rhos, opacities, colors, rows, cols, radius)
