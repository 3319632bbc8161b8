"""Public rasterization entry point: checks shapes once, then picks the implementation."""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from ._torch_impl import _rasterize
from .coords import AxisMap

ENV_VAR = "GSASR_RASTERIZER"
_MODES = ("auto", "torch", "triton")


@functools.cache
def _triton_import_error() -> str | None:
    """Why the Triton kernels cannot be imported, or None; imports them (and Triton) once."""
    try:
        from . import triton_rasterize  # noqa: F401
    except ImportError as e:
        return f"Triton missing ({e})"
    return None


def _interpret() -> bool:
    """Whether TRITON_INTERPRET is on, parsed as Triton parses it."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on", "y")


def _mode() -> str:
    """GSASR_RASTERIZER, normalised; unset means auto."""
    return os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"


def rasterizer_path(device_type: str) -> tuple[str, str]:
    """The implementation used for tensors on `device_type` ("torch", "triton" or
    "unavailable", when GSASR_RASTERIZER asks for what cannot run), and why."""
    mode = _mode()
    forced = f"forced by {ENV_VAR}={mode}"
    if mode not in _MODES:
        return "unavailable", f"{ENV_VAR}={mode!r} is not one of {', '.join(_MODES)}"
    if mode == "torch":
        return "torch", forced
    if mode == "auto" and device_type != "cuda":
        return "torch", f"no CUDA ({device_type} tensors; the Triton kernels need CUDA)"
    missing = _triton_import_error()
    if missing is not None:
        return ("torch", missing) if mode == "auto" else ("unavailable", f"{forced}, but {missing}")
    if mode == "auto":
        return "triton", "CUDA tensors and Triton available"
    if device_type == "cuda":
        return "triton", forced
    from . import triton_rasterize

    if not (_interpret() and triton_rasterize.INTERPRET):
        return "unavailable", (
            f"{forced}, but Triton runs {device_type} tensors only in its interpreter: set "
            "TRITON_INTERPRET=1 before gsasr_kernels loads Triton, or use CUDA tensors"
        )
    return "triton", f"{forced}, on {device_type} through TRITON_INTERPRET=1"


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
    name, why = rasterizer_path(means.device.type)
    if name == "unavailable":
        raise ValueError(why)
    # The kernels compute in fp32: float64 (gradcheck, calibration) stays on the reference.
    if name == "triton" and means.dtype == torch.float64:
        if _mode() == "triton":
            raise ValueError(f"{why}, but the Triton kernels take fp32, fp16 or bf16, not float64")
        name = "torch"
    if name == "triton":
        from .triton_rasterize import rasterize_triton

        return rasterize_triton(means, sigmas, rhos, opacities, colors, rows, cols, radius)
    device = means.device
    rows, cols = rows.to(device), cols.to(device)
    return _rasterize(means, sigmas, rhos, opacities, colors, rows, cols, radius)
