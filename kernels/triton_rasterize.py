"""Triton kernels for the rasterizer: a tiled forward and a per-cell-block backward.

Same inputs, output and math as `_rasterize` in `_torch_impl.py`, which is their ground
truth. Both kernels write every output element once (no atomics), so results are
deterministic; both accumulate in fp32 and store in the parameters' dtype.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from .coords import AxisMap
from .field import GaussianField
from .rasterize import triton_interpret

# Read once, as `triton.jit` does: it decides whether the kernels below are interpreted.
INTERPRET = triton_interpret()
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Tile shapes. The interpreter gets one fixed config (the autotuner then never benchmarks).
# On CUDA the autotuner keys on G, C, R and a log2 bucket of the scale rather than on the
# output size: training renders a new size every batch, and re-tuning each would cost more
# than it saves, while the best tile follows from pixels per LR cell. The candidates are
# those that compile for sm_90 without register spills (ptxas -v); none is GPU-measured yet.
if INTERPRET:
    _FWD_CONFIGS = [triton.Config({"BLOCK_H": 16, "BLOCK_W": 16}, num_warps=4)]
    _BWD_CONFIGS = [triton.Config({"BLOCK_Y": 2, "BLOCK_X": 2, "BLOCK_H": 8, "BLOCK_W": 8})]
else:
    _FWD_CONFIGS = [
        triton.Config({"BLOCK_H": bh, "BLOCK_W": bw}, num_warps=nw)
        for bh, bw, nw in ((8, 8, 2), (8, 16, 2), (16, 16, 4), (16, 32, 8), (32, 32, 16))
    ]
    _BWD_CONFIGS = [
        triton.Config({"BLOCK_Y": by, "BLOCK_X": bx, "BLOCK_H": bh, "BLOCK_W": bw}, num_warps=nw)
        for by, bx, bh, bw, nw in (
            (1, 1, 8, 8, 4),
            (1, 1, 16, 16, 8),
            (1, 2, 8, 16, 4),
            (2, 2, 8, 8, 4),
        )
    ]
_TUNE_KEY = ["G", "C", "R", "scale_bucket"]


@triton.autotune(configs=_FWD_CONFIGS, key=_TUNE_KEY)
@triton.jit
def _rasterize_fwd_kernel(
    means_ptr,  # [B, H, W, G, 2] contiguous
    sigmas_ptr,  # [B, H, W, G, 2]
    rhos_ptr,  # [B, H, W, G]
    opacities_ptr,  # [B, H, W, G]
    colors_ptr,  # [B, H, W, G, C]
    row_cell_ptr,  # [Ho] int64, nondecreasing
    row_frac_ptr,  # [Ho] fp32
    col_cell_ptr,  # [Wo] int64, nondecreasing
    col_frac_ptr,  # [Wo] fp32
    out_ptr,  # [B, C, Ho, Wo]
    out_stride_b,
    out_stride_c,
    out_stride_h,
    out_stride_w,
    n_rows,
    n_cols,
    H,
    W,
    G,
    C,
    scale_bucket,  # autotune key only
    R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """One program renders a BLOCK_H x BLOCK_W tile of output pixels of one image.

        out[c, p] = sum_n  a_n col_n[c] exp(-q_n / 2) w(|d_n|^2),   d_n = p - m_n
        q_n = A dx^2 + 2 B dx dy + C dy^2,  (A, B, C) = conic of (sx, sy, rho)
        w(t) = max(1 - t / R^2, 0)^2

    summed over the Gaussians n of the cells within R of the pixel's own cell. The
    program loops over every cell within R of the cells its tile covers, and over the G
    Gaussians of each, masking the pixels whose window does not hold that cell, exactly
    as the reference's window does.
    """
    # -- program ids
    pid_w = tl.program_id(0).to(tl.int64)
    pid_h = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)

    # -- offsets: the tile is flattened so that the accumulator is [pixel, channel]
    offs_p = tl.arange(0, BLOCK_H * BLOCK_W)
    i = pid_h * BLOCK_H + offs_p // BLOCK_W
    j = pid_w * BLOCK_W + offs_p % BLOCK_W
    offs_c = tl.arange(0, BLOCK_C)

    # -- masks
    mask_p = (i < n_rows) & (j < n_cols)
    mask_c = offs_c < C

    # -- masked loads: each pixel's LR cell and its position inside it
    cell_i = tl.load(row_cell_ptr + i, mask=mask_p, other=0)
    frac_i = tl.load(row_frac_ptr + i, mask=mask_p, other=0.0)
    cell_j = tl.load(col_cell_ptr + j, mask=mask_p, other=0)
    frac_j = tl.load(col_frac_ptr + j, mask=mask_p, other=0.0)
    # The cells are monotone, so min/max are those of the tile's first/last pixel.
    y_start = tl.maximum(tl.min(tl.where(mask_p, cell_i, H + R), axis=0) - R, 0)
    y_end = tl.minimum(tl.max(tl.where(mask_p, cell_i, -R - 1), axis=0) + R + 1, H)
    x_start = tl.maximum(tl.min(tl.where(mask_p, cell_j, W + R), axis=0) - R, 0)
    x_end = tl.minimum(tl.max(tl.where(mask_p, cell_j, -R - 1), axis=0) + R + 1, W)

    # -- compute
    inv_r2 = 1.0 / (R * R)
    acc = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=tl.float32)
    for cy in range(y_start, y_end):
        oy = cy - cell_i  # cell offset seen from each pixel, as the reference's `oy`
        row_ok = mask_p & (tl.abs(oy) <= R)
        fy = frac_i - oy.to(tl.float32)
        for cx in range(x_start, x_end):
            ox = cx - cell_j
            ok = row_ok & (tl.abs(ox) <= R)
            fx = frac_j - ox.to(tl.float32)
            for g in range(G):
                # Unmasked scalar loads: in bounds by the loop ranges, and one load serves
                # the whole tile. Loading a cell's G Gaussians as a vector instead needs
                # [P, G, C] temporaries: 168 registers against 96 (ptxas, sm_90, 16x16).
                n = ((pid_b * H + cy) * W + cx) * G + g
                mx = tl.load(means_ptr + 2 * n).to(tl.float32)
                my = tl.load(means_ptr + 2 * n + 1).to(tl.float32)
                sx = tl.load(sigmas_ptr + 2 * n).to(tl.float32)
                sy = tl.load(sigmas_ptr + 2 * n + 1).to(tl.float32)
                rho = tl.load(rhos_ptr + n).to(tl.float32)
                a = tl.load(opacities_ptr + n).to(tl.float32)
                col = tl.load(colors_ptr + n * C + offs_c, mask=mask_c, other=0.0).to(tl.float32)
                inv = 1.0 / (1.0 - rho * rho)
                ca = inv / (sx * sx)
                cb = -rho * inv / (sx * sy)
                cc = inv / (sy * sy)
                dx = fx - mx
                dy = fy - my
                q = ca * dx * dx + 2.0 * cb * dx * dy + cc * dy * dy
                taper = tl.maximum(1.0 - (dx * dx + dy * dy) * inv_r2, 0.0)
                wgt = tl.where(ok, tl.exp(-0.5 * q) * taper * taper, 0.0)
                acc += wgt[:, None] * (a * col)[None, :]

    # -- masked store
    out_offs = (
        pid_b * out_stride_b
        + offs_c[None, :] * out_stride_c
        + i[:, None] * out_stride_h
        + j[:, None] * out_stride_w
    )
    tl.store(
        out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :]
    )


# Backward. For Gaussian n and pixel p (inside n's window; zero elsewhere):
#   w   = e T,  e = exp(-q/2),  T = u^2,  u = max(1 - t, 0),  t = (dx^2 + dy^2) / R^2
#   out[c, p] += a col[c] w,          with upstream gradient v[c, p]
# Let s = sum_c col[c] v[c, p] and g = dL/dw = a s. Then, summed over p:
#   dL/dcol[c] = a sum w v[c]         dL/da = sum w s
#   dL/dq = -g w / 2                  dL/dt = -2 g e u   (0 where t >= 1, as clamp's grad)
#   dL/dA = sum dL/dq dx^2,  dL/dB = 2 sum dL/dq dx dy,  dL/dC = sum dL/dq dy^2
#   dL/dmx = -sum (dL/dq (2A dx + 2B dy) + dL/dt 2 dx / R^2), dL/dmy likewise with (B, C)
# and per Gaussian, with inv = 1/(1 - rho^2), A = inv/sx^2, B = -rho inv/(sx sy), C = inv/sy^2:
#   dL/dsx  = -(2A dL/dA + B dL/dB) / sx          dL/dsy = -(B dL/dB + 2C dL/dC) / sy
#   dL/drho = 2 rho inv (A dL/dA + C dL/dC) - inv^2 (1 + rho^2) dL/dB / (sx sy)
# The pixels that see cell y are the rows i with |rows.cell[i] - y| <= R, a contiguous
# range as rows.cell is monotone: the host finds it with searchsorted (and for columns).
@triton.autotune(configs=_BWD_CONFIGS, key=_TUNE_KEY)
@triton.jit
def _rasterize_bwd_kernel(
    means_ptr,
    sigmas_ptr,
    rhos_ptr,
    opacities_ptr,
    colors_ptr,  # as in the forward
    row_cell_ptr,
    row_frac_ptr,
    col_cell_ptr,
    col_frac_ptr,
    row_start_ptr,
    row_end_ptr,  # [H] int64: output rows [start, end) that see each LR row
    col_start_ptr,
    col_end_ptr,  # [W] int64
    grad_out_ptr,  # [B, C, Ho, Wo]
    grad_out_stride_b,
    grad_out_stride_c,
    grad_out_stride_h,
    grad_out_stride_w,
    grad_means_ptr,
    grad_sigmas_ptr,
    grad_rhos_ptr,
    grad_opacities_ptr,
    grad_colors_ptr,
    n_rows,
    n_cols,
    H,
    W,
    G,
    scale_bucket,  # autotune key only
    C: tl.constexpr,  # unrolled channel loop: no [N, P, C] temporaries
    R: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    BLOCK_X: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """One program owns the Gaussians of a BLOCK_Y x BLOCK_X block of LR cells of one
    image and walks the output pixels of their footprint in BLOCK_H x BLOCK_W tiles."""
    # -- program ids
    pid_x = tl.program_id(0).to(tl.int64)
    pid_y = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)

    # -- offsets: Gaussians flattened as (cell row, cell column, g)
    offs_n = tl.arange(0, BLOCK_Y * BLOCK_X * BLOCK_G)
    y_n = pid_y * BLOCK_Y + offs_n // (BLOCK_X * BLOCK_G)
    x_n = pid_x * BLOCK_X + (offs_n // BLOCK_G) % BLOCK_X
    g_n = offs_n % BLOCK_G
    offs_c = tl.arange(0, BLOCK_C)
    offs_p = tl.arange(0, BLOCK_H * BLOCK_W)

    # -- masks
    mask_n = (y_n < H) & (x_n < W) & (g_n < G)
    mask_c = offs_c < C
    mask_nc = mask_n[:, None] & mask_c[None, :]

    # -- masked loads: parameters and the union of the cells' footprints
    n = ((pid_b * H + y_n) * W + x_n) * G + g_n
    mx = tl.load(means_ptr + 2 * n, mask=mask_n, other=0.0).to(tl.float32)
    my = tl.load(means_ptr + 2 * n + 1, mask=mask_n, other=0.0).to(tl.float32)
    sx = tl.load(sigmas_ptr + 2 * n, mask=mask_n, other=1.0).to(tl.float32)
    sy = tl.load(sigmas_ptr + 2 * n + 1, mask=mask_n, other=1.0).to(tl.float32)
    rho = tl.load(rhos_ptr + n, mask=mask_n, other=0.0).to(tl.float32)
    a = tl.load(opacities_ptr + n, mask=mask_n, other=0.0).to(tl.float32)
    col_offs = n[:, None] * C + offs_c[None, :]
    i_start = tl.min(tl.load(row_start_ptr + y_n, mask=mask_n, other=n_rows), axis=0)
    i_end = tl.max(tl.load(row_end_ptr + y_n, mask=mask_n, other=0), axis=0)
    j_start = tl.min(tl.load(col_start_ptr + x_n, mask=mask_n, other=n_cols), axis=0)
    j_end = tl.max(tl.load(col_end_ptr + x_n, mask=mask_n, other=0), axis=0)

    # -- compute
    inv_r2 = 1.0 / (R * R)
    inv = 1.0 / (1.0 - rho * rho)
    ca = inv / (sx * sx)
    cb = -rho * inv / (sx * sy)
    cc = inv / (sy * sy)
    acc_wv = tl.zeros((BLOCK_Y * BLOCK_X * BLOCK_G, BLOCK_C), dtype=tl.float32)  # sum w v
    acc_ws = tl.zeros((BLOCK_Y * BLOCK_X * BLOCK_G,), dtype=tl.float32)  # sum w s
    acc_qxx = tl.zeros_like(acc_ws)  # dL/dA
    acc_qxy = tl.zeros_like(acc_ws)  # dL/dB / 2
    acc_qyy = tl.zeros_like(acc_ws)  # dL/dC
    acc_dx = tl.zeros_like(acc_ws)  # dL/d(dx) = -dL/dmx
    acc_dy = tl.zeros_like(acc_ws)
    for i0 in range(i_start, i_end, BLOCK_H):
        for j0 in range(j_start, j_end, BLOCK_W):
            i = i0 + offs_p // BLOCK_W
            j = j0 + offs_p % BLOCK_W
            mask_p = (i < i_end) & (j < j_end)
            cell_i = tl.load(row_cell_ptr + i, mask=mask_p, other=0)
            frac_i = tl.load(row_frac_ptr + i, mask=mask_p, other=0.0)
            cell_j = tl.load(col_cell_ptr + j, mask=mask_p, other=0)
            frac_j = tl.load(col_frac_ptr + j, mask=mask_p, other=0.0)
            v_offs = pid_b * grad_out_stride_b + i * grad_out_stride_h + j * grad_out_stride_w
            oy = y_n[:, None] - cell_i[None, :]  # [N, P]
            ox = x_n[:, None] - cell_j[None, :]
            ok = mask_n[:, None] & mask_p[None, :] & (tl.abs(oy) <= R) & (tl.abs(ox) <= R)
            dx = (frac_j[None, :] - ox.to(tl.float32)) - mx[:, None]
            dy = (frac_i[None, :] - oy.to(tl.float32)) - my[:, None]
            q = ca[:, None] * dx * dx + 2.0 * cb[:, None] * dx * dy + cc[:, None] * dy * dy
            u = tl.maximum(1.0 - (dx * dx + dy * dy) * inv_r2, 0.0)
            e = tl.where(ok, tl.exp(-0.5 * q), 0.0)
            wgt = e * u * u
            s = tl.zeros_like(wgt)  # [N, P] colour . upstream gradient
            for c in tl.static_range(C):
                v = tl.load(
                    grad_out_ptr + v_offs + c * grad_out_stride_c, mask=mask_p, other=0.0
                ).to(tl.float32)  # [P]
                col_c = tl.load(colors_ptr + n * C + c, mask=mask_n, other=0.0).to(tl.float32)
                s += col_c[:, None] * v[None, :]
                wv = tl.sum(wgt * v[None, :], axis=1)
                acc_wv += tl.where(offs_c[None, :] == c, wv[:, None], 0.0)
            g = a[:, None] * s
            g_q = -0.5 * g * wgt
            g_t = -2.0 * g * e * u
            acc_ws += tl.sum(wgt * s, axis=1)
            acc_qxx += tl.sum(g_q * dx * dx, axis=1)
            acc_qxy += tl.sum(g_q * dx * dy, axis=1)
            acc_qyy += tl.sum(g_q * dy * dy, axis=1)
            g_tr = 2.0 * inv_r2 * g_t
            acc_dx += tl.sum(2.0 * g_q * (ca[:, None] * dx + cb[:, None] * dy) + g_tr * dx, axis=1)
            acc_dy += tl.sum(2.0 * g_q * (cb[:, None] * dx + cc[:, None] * dy) + g_tr * dy, axis=1)

    g_sx = -2.0 * (ca * acc_qxx + cb * acc_qxy) / sx
    g_sy = -2.0 * (cb * acc_qxy + cc * acc_qyy) / sy
    g_rho = 2.0 * rho * inv * (ca * acc_qxx + cc * acc_qyy) - 2.0 * inv * inv * (
        1.0 + rho * rho
    ) * acc_qxy / (sx * sy)

    # -- masked stores
    dtype = grad_means_ptr.dtype.element_ty
    tl.store(grad_means_ptr + 2 * n, (-acc_dx).to(dtype), mask=mask_n)
    tl.store(grad_means_ptr + 2 * n + 1, (-acc_dy).to(dtype), mask=mask_n)
    tl.store(grad_sigmas_ptr + 2 * n, g_sx.to(dtype), mask=mask_n)
    tl.store(grad_sigmas_ptr + 2 * n + 1, g_sy.to(dtype), mask=mask_n)
    tl.store(grad_rhos_ptr + n, g_rho.to(dtype), mask=mask_n)
    tl.store(grad_opacities_ptr + n, acc_ws.to(dtype), mask=mask_n)
    tl.store(grad_colors_ptr + col_offs, (a[:, None] * acc_wv).to(dtype), mask=mask_nc)


def _scale_bucket(ho: int, wo: int, h: int, w: int) -> int:
    """log2 of the output pixels per LR cell along an axis, rounded to 0..4: autotune key."""
    return min(4, max(0, round(0.5 * math.log2(max(ho * wo, 1) / max(h * w, 1)))))


def _footprint(cell: Tensor, n_cells: int, radius: int) -> tuple[Tensor, Tensor]:
    """Per LR cell k, the output samples [start, end) whose own cell is within `radius`."""
    k = torch.arange(n_cells, device=cell.device, dtype=torch.int64)
    start = torch.searchsorted(cell, k - radius, side="left")
    end = torch.searchsorted(cell, k + radius, side="right")
    return start, end


def _device_guard(t: Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


@dataclass(frozen=True)
class Launch:
    """One kernel launch, fully bound: what runs it, and what the compile check compiles."""

    kernel: Any  # a triton.autotune'd kernel
    grid: Callable[[dict], tuple[int, ...]]
    args: tuple  # positional arguments, in the kernel's order
    meta: dict  # constexpr arguments and compile options not chosen by the autotuner

    def __call__(self) -> None:
        with _device_guard(self.args[0]):
            self.kernel[self.grid](*self.args, **self.meta)


def _fwd_launch(
    field: GaussianField,  # contiguous, one dtype
    axes: tuple[Tensor, Tensor, Tensor, Tensor],  # row_cell, row_frac, col_cell, col_frac
    radius: int,
) -> tuple[Tensor, Launch | None]:
    """The output [B, C, Ho, Wo] and the launch that fills it (None when it is empty)."""
    row_cell, row_frac, col_cell, col_frac = axes
    b, h, w, g = field.shape
    c = field.channels
    ho, wo = row_cell.numel(), col_cell.numel()
    out = field.means.new_empty(b, c, ho, wo)  # the kernel writes every element
    if out.numel() == 0 or field.means.numel() == 0:
        return out.zero_(), None

    def grid(meta):
        return triton.cdiv(wo, meta["BLOCK_W"]), triton.cdiv(ho, meta["BLOCK_H"]), b

    args = (*field.tensors(), *axes, out, *out.stride(), ho, wo, h, w, g, c)
    args += (_scale_bucket(ho, wo, h, w),)
    meta = {"R": radius, "BLOCK_C": triton.next_power_of_2(c)}
    return out, Launch(_rasterize_fwd_kernel, grid, args, meta)


def _fwd(field: GaussianField, axes: tuple[Tensor, ...], radius: int) -> Tensor:
    """Render: [B, C, Ho, Wo] in the field's dtype."""
    out, launch = _fwd_launch(field, axes, radius)
    if launch is not None:
        launch()
    return out


def _bwd_launch(
    field: GaussianField,
    axes: tuple[Tensor, Tensor, Tensor, Tensor],
    radius: int,
    grad_out: Tensor,  # [B, C, Ho, Wo]
) -> tuple[GaussianField, Launch | None]:
    """The parameter gradients and the launch that fills them (None when empty)."""
    row_cell, row_frac, col_cell, col_frac = axes
    b, h, w, g = field.shape
    c = field.channels
    ho, wo = row_cell.numel(), col_cell.numel()
    if grad_out.numel() == 0 or field.means.numel() == 0:
        return GaussianField(*(torch.zeros_like(t) for t in field.tensors())), None
    grads = GaussianField(*(torch.empty_like(t) for t in field.tensors()))
    row_start, row_end = _footprint(row_cell, h, radius)
    col_start, col_end = _footprint(col_cell, w, radius)

    def grid(meta):
        return triton.cdiv(w, meta["BLOCK_X"]), triton.cdiv(h, meta["BLOCK_Y"]), b

    args = (*field.tensors(), *axes, row_start, row_end, col_start, col_end)
    args += (grad_out, *grad_out.stride(), *grads.tensors(), ho, wo, h, w, g)
    args += (_scale_bucket(ho, wo, h, w),)
    meta = {
        "C": c,
        "R": radius,
        "BLOCK_G": triton.next_power_of_2(g),
        "BLOCK_C": triton.next_power_of_2(c),
    }
    return grads, Launch(_rasterize_bwd_kernel, grid, args, meta)


def _bwd(
    field: GaussianField, axes: tuple[Tensor, ...], radius: int, grad_out: Tensor
) -> GaussianField:
    """Gradients of sum(out * grad_out) with respect to the five parameter tensors."""
    grads, launch = _bwd_launch(field, axes, radius, grad_out)
    if launch is not None:
        launch()
    return grads


class _RasterizeFunction(torch.autograd.Function):
    """The Triton rasterizer as an autograd op; axis maps come in as tensors."""

    @staticmethod
    def forward(ctx, radius, *tensors):
        field, axes = GaussianField(*tensors[:5]), tensors[5:]
        ctx.save_for_backward(*tensors)
        ctx.radius = radius
        return _fwd(field, axes, radius)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        tensors = ctx.saved_tensors
        grads = _bwd(GaussianField(*tensors[:5]), tensors[5:], ctx.radius, grad_out.contiguous())
        needed = ctx.needs_input_grad[1:6]
        return (
            None,
            *(g if need else None for g, need in zip(grads.tensors(), needed, strict=True)),
            None,
            None,
            None,
            None,
        )


def _axes(rows: AxisMap, cols: AxisMap, device: torch.device) -> tuple[Tensor, ...]:
    """(row_cell int64, row_frac fp32, col_cell, col_frac) on `device`, contiguous."""
    return tuple(
        t.contiguous()
        for ax in (rows, cols)
        for t in (ax.cell.to(device, torch.int64), ax.frac.to(device, torch.float32))
    )


def rasterize_triton(
    field: GaussianField,  # [B, H, W, G, ...], C colour channels, fp32, fp16 or bf16
    rows: AxisMap,  # Ho output rows
    cols: AxisMap,  # Wo output columns
    radius: int,
) -> Tensor:  # [B, C, Ho, Wo], in the parameters' dtype
    """Render with the Triton kernels; same math as `_rasterize`; differentiable."""
    dtypes = {t.dtype for t in field.tensors()}
    if len(dtypes) != 1 or field.means.dtype not in DTYPES:
        raise ValueError(
            f"the Triton rasterizer takes one of {DTYPES} for all parameters, "
            f"got {sorted(map(str, dtypes))}"
        )
    if radius < 1:
        raise ValueError(f"radius must be at least 1, got {radius}")
    tensors = (t.contiguous() for t in field.tensors())
    return _RasterizeFunction.apply(int(radius), *tensors, *_axes(rows, cols, field.means.device))
