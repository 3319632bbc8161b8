"""Rasterization of GSASR's 2D Gaussian fields: a PyTorch reference and Triton kernels."""

from __future__ import annotations

from .coords import AxisMap, axis_map
from .field import GaussianField
from .rasterize import rasterize, rasterizer_path, triton_interpret

__all__ = [
    "AxisMap",
    "GaussianField",
    "axis_map",
    "rasterize",
    "rasterizer_path",
    "triton_interpret",
]
