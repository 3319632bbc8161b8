"""Rasterization of GSASR's 2D Gaussian fields: a PyTorch reference and Triton kernels."""

from __future__ import annotations

from .coords import AxisMap, axis_map
from .rasterize import rasterize, rasterizer_path

__all__ = ["AxisMap", "axis_map", "rasterize", "rasterizer_path"]
