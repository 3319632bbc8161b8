"""Public rasterization entry point: checks shapes once, then picks the implementation."""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from ._torch_impl import _rasterize
from .coords import AxisMap
from .field import GaussianField

ENV_VAR = "GSASR_RASTERIZER"
_MODES = ("auto", "torch", "triton")


def triton_interpret() -> bool:
    """Whether TRITON_INTERPRET is on, parsed as Triton parses it (the one place we read it).

    Triton reads it once, when a kernel module is decorated; `triton_rasterize.INTERPRET`
    keeps the value it saw then."""
    value = os.environ.get("TRITON_INTERPRET", "").strip().upper()
    return value in ("1", "TRUE", "YES", "ON", "Y")


@functools.cache
def _triton_import_error() -> str | None:
    """Why the Triton kernels cannot be imported, or None; imports them (and Triton) once."""
    try:
        from . import triton_rasterize  # noqa: F401
    except ImportError as e:
        return f"Triton missing ({e})"
    return None


def _mode(impl: str | None = None) -> str:
    """`impl` if given, else GSASR_RASTERIZER, normalised; unset means auto."""
    if impl is not None:
        return impl
    return os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"


def rasterizer_path(device_type: str, impl: str | None = None) -> tuple[str, str]:
    """The implementation used for tensors on `device_type` ("torch", "triton" or
    "unavailable", when GSASR_RASTERIZER or `impl` asks for what cannot run), and why."""
    mode = _mode(impl)
    forced = f"forced by {ENV_VAR}={mode}" if impl is None else f"impl={mode!r}"
    if mode not in _MODES:
        name = f"{ENV_VAR}={mode!r}" if impl is None else f"impl={mode!r}"
        return "unavailable", f"{name} is not one of {', '.join(_MODES)}"
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

    if not (triton_interpret() and triton_rasterize.INTERPRET):
        return "unavailable", (
            f"{forced}, but Triton runs {device_type} tensors only in its interpreter: set "
            "TRITON_INTERPRET=1 before gsasr_kernels loads Triton, or use CUDA tensors"
        )
    return "triton", f"{forced}, on {device_type} through TRITON_INTERPRET=1"


def _check_axis(axis: AxisMap, n_cells: int, name: str) -> None:
    """Cells must be nondecreasing and inside the field (checked where they live: on the
    CPU, as `axis_map` makes them, this costs no device synchronisation)."""
    cell = axis.cell
    if cell.numel() == 0:
        return
    if int(cell.min()) < 0 or int(cell.max()) >= n_cells:
        raise ValueError(f"{name} sample LR cells outside the field's {n_cells} cells")
    if cell.numel() > 1 and bool((cell[1:] < cell[:-1]).any()):
        raise ValueError(f"{name} sample LR cells must be nondecreasing")


def rasterize(
    field: GaussianField,  # [B, H, W, G, ...], C colour channels
    rows: AxisMap,  # Ho output rows
    cols: AxisMap,  # Wo output columns
    radius: int = 1,
    *,
    impl: str | None = None,
) -> Tensor:  # [B, C, Ho, Wo]
    """Render the additive sum of tapered Gaussians at the output pixels `rows` x `cols`.

    `impl` ("auto", "torch" or "triton") overrides GSASR_RASTERIZER; "torch" always runs
    the PyTorch reference, in any dtype (float64 included).
    """
    field.check()
    if radius < 1:
        raise ValueError(f"radius must be at least 1, got {radius}")
    _, h, w, _ = field.shape
    _check_axis(rows, h, "row")
    _check_axis(cols, w, "column")
    device, dtype = field.means.device, field.means.dtype
    name, why = rasterizer_path(device.type, impl)
    if name == "unavailable":
        raise ValueError(why)
    # The kernels compute in fp32: float64 (gradcheck, calibration) stays on the reference.
    if name == "triton" and dtype == torch.float64:
        if _mode(impl) == "triton":
            raise ValueError(f"{why}, but the Triton kernels take fp32, fp16 or bf16, not float64")
        name = "torch"
    if name == "triton":
        from .triton_rasterize import rasterize_triton

        return rasterize_triton(field, rows, cols, radius)
    return _rasterize(field, rows.to(device), cols.to(device), radius)
