"""Triton kernels for the rasterizer: pack, a gather forward and a per-Gaussian backward.

Same inputs, output and math as `_rasterize` in `_torch_impl.py`, their ground truth.

Work is organised by LR cell, not by output tile. The output pixels whose own cell is
(y, x) are rows [row_first[y], row_first[y + 1]) times columns [col_first[x],
col_first[x + 1]): at scale s about s x s of them, all seeing the same (2R + 1)^2 cells.
- `_pack_kernel` computes each Gaussian's per-Gaussian terms once (mean, conic scaled for
  exp2, premultiplied colour), as the reference packs them.
- `_fwd_kernel`: one thread per cell holds a SY x SX block of its pixels in registers
  and gathers exactly the G (2R + 1)^2 Gaussians around them, each load serving every
  pixel of the block: G (2R + 1)^2 evaluations per pixel, at every scale.
- `_bwd_kernel`: one thread per Gaussian walks the pixels of its (2R + 1)^2 cells and
  accumulates its own sums per element of an SX-wide row, reduced once at the end.

Each output element and each gradient element is computed by one thread, in an order
fixed by the problem (R, G, C and the pixels per cell), never by the launch config: no
atomics, bitwise reproducible on a given GPU and Triton version, whatever the autotuner
picks; the forward is also bitwise independent of tiling (every pixel's arithmetic is the
same whichever block holds it). FP fusion is off; the multiply-adds are explicit `tl.fma`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import Launch, Samples
from .coords import AxisMap
from .field import GaussianField
from .rasterize import triton_interpret

# Read once, as `triton.jit` does: it decides whether the kernels below are interpreted.
INTERPRET = triton_interpret()
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FP_FUSION = False  # every fused multiply-add is written as tl.fma, so results don't
# depend on what the compiler would contract (Triton's default changes in 3.10)
LOG2E = tl.constexpr(1.4426950408889634)
MAX_SLOTS = 64  # accumulator registers per thread in the forward: BLOCK_C x SY x SX

# One thread per cell (forward) or per Gaussian (backward), 32 x num_warps per program;
# the config changes only how many programs run, never a result. Autotuning is cached on
# disk across processes and keyed by the problem's shape class and a log2 size bucket.
# maxnreg: without it ptxas caps 64- and 128-thread programs at 128 registers and spills
# (backward with C = 4 and two column blocks, sm_80 to sm_89); all need at most ~165.
if INTERPRET:
    _CONFIGS = [triton.Config({"BLOCK_N": 32}, num_warps=1)]
else:
    _CONFIGS = [
        triton.Config({"BLOCK_N": 32 * nw}, num_warps=nw, num_stages=1, maxnreg=192)
        for nw in (2, 4)
    ]


def _autotune(key):
    try:
        return triton.autotune(configs=_CONFIGS, key=key, cache_results=True)
    except TypeError:  # Triton before 3.2 caches in memory only
        return triton.autotune(configs=_CONFIGS, key=key)


@triton.jit
def _pack_kernel(
    means_ptr,  # [N, 2] N = B H W G Gaussians, contiguous
    sigmas_ptr,  # [N, 2]
    rhos_ptr,  # [N]
    opacities_ptr,  # [N]
    colors_ptr,  # [N, C]
    packed_ptr,  # [N, 5 + C] fp32
    n_gaussians,
    C: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """packed[n] = (mx, my, ka A, kb B, ka C, a col[0..C)) with k = -log2(e) (1/2, 1, 1/2):

    inv = 1 / (1 - rho^2),  A = inv / sx^2,  B = -rho inv / (sx sy),  C = inv / sy^2
    exp(-(A dx^2 + 2 B dx dy + C dy^2) / 2) = exp2(ka A dx^2 + kb B dx dy + ka C dy^2)
    """
    # -- program id and offsets
    pid = tl.program_id(0).to(tl.int64)
    n = pid * BLOCK + tl.arange(0, BLOCK)
    # -- mask
    mask = n < n_gaussians
    # -- masked loads
    sx = tl.load(sigmas_ptr + 2 * n, mask=mask, other=1.0).to(tl.float32)
    sy = tl.load(sigmas_ptr + 2 * n + 1, mask=mask, other=1.0).to(tl.float32)
    rho = tl.load(rhos_ptr + n, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(opacities_ptr + n, mask=mask, other=0.0).to(tl.float32)
    # -- compute
    inv = 1.0 / (1.0 - rho * rho)
    half: tl.constexpr = -0.5 * LOG2E
    # -- masked stores
    out = packed_ptr + n * (5 + C)
    for k in tl.static_range(2):
        mk = tl.load(means_ptr + 2 * n + k, mask=mask, other=0.0).to(tl.float32)
        tl.store(out + k, mk, mask=mask)
    tl.store(out + 2, (inv / (sx * sx)) * half, mask=mask)
    tl.store(out + 3, (rho * inv / (sx * sy)) * LOG2E, mask=mask)
    tl.store(out + 4, (inv / (sy * sy)) * half, mask=mask)
    for c in tl.static_range(C):
        col = tl.load(colors_ptr + n * C + c, mask=mask, other=0.0).to(tl.float32)
        tl.store(out + 5 + c, a * col, mask=mask)


@_autotune(["G", "C", "R", "SY", "SX", "size_bucket"])
@triton.jit
def _fwd_kernel(
    packed_ptr,  # [B, H, W, G, 5 + C] fp32, from _pack_kernel
    row_first_ptr,  # [H + 1] int64: output rows of LR row y are [row_first[y], row_first[y + 1])
    row_frac_ptr,  # [Ho] fp32, position of each output row inside its LR row
    col_first_ptr,  # [W + 1] int64
    col_frac_ptr,  # [Wo] fp32
    out_ptr,  # [B, C, Ho, Wo]
    out_stride_b,
    out_stride_c,
    out_stride_h,
    out_stride_w,
    n_cells,  # B H W
    H,
    W,
    size_bucket,  # autotune key only
    G: tl.constexpr,
    C: tl.constexpr,
    R: tl.constexpr,
    SY: tl.constexpr,  # pixel rows per cell held by one thread
    SX: tl.constexpr,  # pixel columns per cell held by one thread
    TX: tl.constexpr,  # blocks of SX columns per cell (program_id(1) = ty TX + tx)
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One thread renders the pixels (sy, sx) of its cell (y, x), sy in [ty SY, ty SY + SY):

        out[c, p] = sum_{|oy|, |ox| <= R} sum_g  acol_n[c] exp2(qa dx^2 + qb dx dy + qc dy^2) w
        d = p - m_n = (fx - ox - mx, fy - oy - my),  n = Gaussian g of cell (y + oy, x + ox),
        w = max(1 - |d|^2 / R^2, 0)^2

    Cells outside the grid contribute nothing. Terms of one pixel row (dy) or column (dx)
    are computed once per Gaussian and shared by the SX (SY) pixels of the block.
    """
    # -- program ids
    pid_n = tl.program_id(0).to(tl.int64)
    pid_t = tl.program_id(1)
    ty = pid_t // TX
    tx = pid_t % TX

    # -- offsets: cells (fastest, one per thread), pixel rows ys and columns xs
    cell = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    x = cell % W
    y = (cell // W) % H
    b = cell // (W * H)
    ys = ty * SY + tl.arange(0, SY)
    xs = tx * SX + tl.arange(0, SX)
    offs_c = tl.arange(0, BLOCK_C)

    # -- masks
    mask_n = cell < n_cells
    row0 = tl.load(row_first_ptr + y, mask=mask_n, other=0)
    col0 = tl.load(col_first_ptr + x, mask=mask_n, other=0)
    n_rows = tl.load(row_first_ptr + y + 1, mask=mask_n, other=0) - row0
    n_cols = tl.load(col_first_ptr + x + 1, mask=mask_n, other=0) - col0
    mask_y = ys[:, None] < n_rows[None, :]  # [SY, N]
    mask_x = xs[:, None] < n_cols[None, :]  # [SX, N]
    mask_c = offs_c < C

    # -- masked loads: the block's pixel positions inside the cell
    # (max_contiguous: the columns of a block are contiguous, but not aligned; keep one
    # cell's pixels in one thread rather than let the compiler spread them for coalescing)
    i = tl.max_contiguous(row0[None, :] + ys[:, None], [1, 1])  # [SY, N] output rows
    j = tl.max_contiguous(col0[None, :] + xs[:, None], [1, 1])  # [SX, N] output columns
    fy = tl.load(row_frac_ptr + i, mask=mask_y, other=0.0)
    fx = tl.load(col_frac_ptr + j, mask=mask_x, other=0.0)

    # -- compute
    neg_inv_r2 = -1.0 / (R * R)
    acc = tl.zeros((BLOCK_C, SY, SX, BLOCK_N), dtype=tl.float32)
    for t in range((2 * R + 1) * (2 * R + 1)):  # the neighbour cell (y + oy, x + ox)
        oy = t // (2 * R + 1) - R
        ox = t % (2 * R + 1) - R
        yy = y + oy
        xx = x + ox
        ok = mask_n & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        py = fy - oy  # [SY, N]
        px = fx - ox  # [SX, N]
        first = ((b * H + yy) * W + xx) * G  # its first Gaussian
        for g in range(G):
            gp = packed_ptr + (first + g) * (5 + C)
            mx = tl.load(gp, mask=ok, other=0.0)
            my = tl.load(gp + 1, mask=ok, other=0.0)
            qa = tl.load(gp + 2, mask=ok, other=0.0)
            qb = tl.load(gp + 3, mask=ok, other=0.0)
            qc = tl.load(gp + 4, mask=ok, other=0.0)
            col_ptr = tl.max_contiguous(gp[None, :] + 5 + offs_c[:, None], [1, 1])
            col = tl.load(
                col_ptr, mask=ok[None, :] & mask_c[:, None], other=0.0
            )  # [BLOCK_C, N]: zero outside the grid, so the term adds nothing
            dx = px - mx[None, :]  # [SX, N]
            dy = py - my[None, :]  # [SY, N]
            dx2 = dx * dx
            dy2 = dy * dy
            ax = qa[None, :] * dx2
            cy = qc[None, :] * dy2
            by = qb[None, :] * dy
            arg = tl.fma(by[:, None, :], dx[None, :, :], cy[:, None, :] + ax[None, :, :])
            r2 = dy2[:, None, :] + dx2[None, :, :]  # [SY, SX, N]
            u = tl.maximum(tl.fma(r2, neg_inv_r2, 1.0), 0.0)
            wgt = tl.exp2(arg) * (u * u)
            acc = tl.fma(wgt[None, :, :, :], col[:, None, None, :], acc)

    # -- masked store
    offs = (
        b * out_stride_b
        + offs_c.to(tl.int64)[:, None, None, None] * out_stride_c
        + i[None, :, None, :] * out_stride_h
        + j[None, None, :, :] * out_stride_w
    )
    mask = mask_c[:, None, None, None] & mask_y[None, :, None, :] & mask_x[None, None, :, :]
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# Backward. For Gaussian n and a pixel p of its (2R + 1)^2 cells, with upstream v[c, p]:
#   e = exp(-q/2),  q = A dx^2 + 2B dx dy + C dy^2,  u = max(1 - |d|^2/R^2, 0),  w = e u^2
#   out[c, p] += a col[c] w,   s = sum_c col[c] v[c, p],   dL/dw = a s
# Summed over p (the thread's accumulators, per element of a row of SX pixels):
#   Wv[c] = sum w v[c],  Ws = sum w s,  Sxx, Sxy, Syy = sum w s (dx^2, dx dy, dy^2),
#   Tx, Ty = sum w s (dx, dy),  Ux, Uy = sum s e u (dx, dy)
# then dL/dcol[c] = a Wv[c],  dL/da = Ws,  dL/dA = -a Sxx/2,  dL/dB = -a Sxy,
#   dL/dC = -a Syy/2, and as dw/d(dx) = -w (A dx + B dy) - 4 e u dx / R^2 (0 where u = 0),
#   dL/dmx = a (A Tx + B Ty + 4 Ux / R^2),  dL/dmy = a (B Tx + C Ty + 4 Uy / R^2);
# through inv = 1/(1 - rho^2), A = inv/sx^2, B = -rho inv/(sx sy), C = inv/sy^2:
#   dL/dsx = -(2A dL/dA + B dL/dB)/sx,  dL/dsy = -(B dL/dB + 2C dL/dC)/sy,
#   dL/drho = 2 rho inv (A dL/dA + C dL/dC) - inv^2 (1 + rho^2) dL/dB / (sx sy).
@_autotune(["G", "C", "R", "SX", "size_bucket"])
@triton.jit
def _bwd_kernel(
    means_ptr,  # [B, H, W, G, 2] contiguous
    sigmas_ptr,  # [B, H, W, G, 2]
    rhos_ptr,  # [B, H, W, G]
    opacities_ptr,  # [B, H, W, G]
    colors_ptr,  # [B, H, W, G, C]
    grad_out_ptr,  # [B, C, Ho, Wo]
    grad_out_stride_b,
    grad_out_stride_c,
    grad_out_stride_h,
    grad_out_stride_w,
    row_first_ptr,  # [H + 1] int64, as in the forward
    row_frac_ptr,  # [Ho] fp32
    col_first_ptr,  # [W + 1] int64
    col_frac_ptr,  # [Wo] fp32
    grad_means_ptr,  # the five gradients, shaped and typed as the parameters
    grad_sigmas_ptr,
    grad_rhos_ptr,
    grad_opacities_ptr,
    grad_colors_ptr,
    n_gaussians,  # B H W G
    H,
    W,
    max_rows,  # most output rows in one LR row
    n_col_blocks,  # blocks of SX columns covering the most columns in one LR column
    size_bucket,  # autotune key only
    G: tl.constexpr,
    C: tl.constexpr,
    R: tl.constexpr,
    SX: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One thread owns Gaussian n and sums over the pixels of the cells within R of its
    own: by column offset ox, block of SX columns, row offset oy, then row."""
    # -- program id and offsets: Gaussians n = ((b H + y) W + x) G + g, one per thread
    pid = tl.program_id(0).to(tl.int64)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    x = (n // G) % W
    y = (n // (G * W)) % H
    b = n // (G * W * H)
    xs = tl.arange(0, SX)
    offs_c = tl.arange(0, BLOCK_C)

    # -- masks
    mask_n = n < n_gaussians
    mask_c = offs_c < C
    mask_nc = mask_c[:, None] & mask_n[None, :]

    # -- masked loads: the Gaussian's parameters, its per-Gaussian terms once
    mx = tl.load(means_ptr + 2 * n, mask=mask_n, other=0.0).to(tl.float32)
    my = tl.load(means_ptr + 2 * n + 1, mask=mask_n, other=0.0).to(tl.float32)
    sx = tl.load(sigmas_ptr + 2 * n, mask=mask_n, other=1.0).to(tl.float32)
    sy = tl.load(sigmas_ptr + 2 * n + 1, mask=mask_n, other=1.0).to(tl.float32)
    rho = tl.load(rhos_ptr + n, mask=mask_n, other=0.0).to(tl.float32)
    a = tl.load(opacities_ptr + n, mask=mask_n, other=0.0).to(tl.float32)
    col_offs = tl.max_contiguous(n[None, :] * C + offs_c[:, None], [1, 1])
    col = tl.load(colors_ptr + col_offs, mask=mask_nc, other=0.0).to(tl.float32)  # [BLOCK_C, N]
    inv = 1.0 / (1.0 - rho * rho)
    ca = inv / (sx * sx)
    cb = -rho * inv / (sx * sy)
    cc = inv / (sy * sy)
    qa = ca * (-0.5 * LOG2E)
    qb = cb * (-LOG2E)
    qc = cc * (-0.5 * LOG2E)

    # -- compute: per-element sums over rows of SX pixels, reduced once after the loops
    neg_inv_r2 = -1.0 / (R * R)
    acc_wv = tl.zeros((BLOCK_C, SX, BLOCK_N), dtype=tl.float32)
    acc_ws = tl.zeros((SX, BLOCK_N), dtype=tl.float32)
    acc_sxx = tl.zeros_like(acc_ws)
    acc_sxy = tl.zeros_like(acc_ws)
    acc_syy = tl.zeros_like(acc_ws)
    acc_tx = tl.zeros_like(acc_ws)
    acc_ty = tl.zeros_like(acc_ws)
    acc_ux = tl.zeros_like(acc_ws)
    acc_uy = tl.zeros_like(acc_ws)
    v_base = grad_out_ptr + b * grad_out_stride_b  # [N]
    v_chan = offs_c.to(tl.int64)[:, None, None] * grad_out_stride_c  # [BLOCK_C, 1, 1]
    for ox in range(-R, R + 1):  # column offset of the pixels' cell
        xx = x + ox
        ok_x = mask_n & (xx >= 0) & (xx < W)
        col0 = tl.load(col_first_ptr + xx, mask=ok_x, other=0)
        n_cols = tl.load(col_first_ptr + xx + 1, mask=ok_x, other=0) - col0
        for xb in range(n_col_blocks):
            jx = xb * SX + xs[:, None]  # [SX, 1] column inside the cell
            mask_x = jx < n_cols[None, :]  # [SX, N]
            j = tl.max_contiguous(col0[None, :] + jx, [1, 1])
            fx = tl.load(col_frac_ptr + j, mask=mask_x, other=0.0)
            dx = (fx + ox) - mx[None, :]  # [SX, N]
            dx2 = dx * dx
            ax = qa[None, :] * dx2
            for oy in range(-R, R + 1):  # row offset
                yy = y + oy
                ok_y = mask_n & (yy >= 0) & (yy < H)
                row0 = tl.load(row_first_ptr + yy, mask=ok_y, other=0)
                n_rows = tl.load(row_first_ptr + yy + 1, mask=ok_y, other=0) - row0
                for r in range(max_rows):
                    i = row0 + r  # [N]
                    ok_r = r < n_rows
                    fy = tl.load(row_frac_ptr + i, mask=ok_r, other=0.0)
                    dy = (fy + oy) - my  # [N]
                    dy2 = dy * dy
                    cy = qc * dy2
                    by = qb * dy
                    # upstream gradient; zero outside the footprint, so those terms vanish
                    ptrs = (v_base + i * grad_out_stride_h)[None, None, :] + v_chan
                    mask = mask_c[:, None, None] & (ok_r[None, :] & mask_x)[None, :, :]
                    v = tl.load(ptrs + j[None, :, :] * grad_out_stride_w, mask=mask, other=0.0)
                    v = v.to(tl.float32)  # [BLOCK_C, SX, N]
                    arg = tl.fma(by[None, :], dx, ax + cy[None, :])
                    u = tl.maximum(tl.fma(dx2 + dy2[None, :], neg_inv_r2, 1.0), 0.0)
                    eu = tl.exp2(arg) * u
                    wgt = eu * u
                    s = tl.sum(col[:, None, :] * v, axis=0)  # [SX, N], in-thread
                    acc_wv = tl.fma(wgt[None, :, :], v, acc_wv)
                    ws = wgt * s
                    wsx = ws * dx
                    acc_ws += ws
                    acc_tx += wsx
                    acc_sxx = tl.fma(wsx, dx, acc_sxx)
                    acc_sxy = tl.fma(wsx, dy[None, :], acc_sxy)
                    acc_syy = tl.fma(ws, dy2[None, :], acc_syy)
                    acc_ty = tl.fma(ws, dy[None, :], acc_ty)
                    seu = eu * s
                    acc_ux = tl.fma(seu, dx, acc_ux)
                    acc_uy = tl.fma(seu, dy[None, :], acc_uy)

    wv = tl.sum(acc_wv, axis=1)  # [BLOCK_C, N]
    g_a = tl.sum(acc_ws, axis=0)
    g_ca = -0.5 * a * tl.sum(acc_sxx, axis=0)
    g_cb = -a * tl.sum(acc_sxy, axis=0)
    g_cc = -0.5 * a * tl.sum(acc_syy, axis=0)
    tx = tl.sum(acc_tx, axis=0)
    ty = tl.sum(acc_ty, axis=0)
    four = -4.0 * neg_inv_r2
    g_mx = a * (ca * tx + cb * ty + four * tl.sum(acc_ux, axis=0))
    g_my = a * (cb * tx + cc * ty + four * tl.sum(acc_uy, axis=0))
    g_sx = -(2.0 * ca * g_ca + cb * g_cb) / sx
    g_sy = -(cb * g_cb + 2.0 * cc * g_cc) / sy
    g_rho = 2.0 * rho * inv * (ca * g_ca + cc * g_cc) - inv * inv * (1.0 + rho * rho) * g_cb / (
        sx * sy
    )

    # -- masked stores
    dtype = grad_means_ptr.dtype.element_ty
    tl.store(grad_means_ptr + 2 * n, g_mx.to(dtype), mask=mask_n)
    tl.store(grad_means_ptr + 2 * n + 1, g_my.to(dtype), mask=mask_n)
    tl.store(grad_sigmas_ptr + 2 * n, g_sx.to(dtype), mask=mask_n)
    tl.store(grad_sigmas_ptr + 2 * n + 1, g_sy.to(dtype), mask=mask_n)
    tl.store(grad_rhos_ptr + n, g_rho.to(dtype), mask=mask_n)
    tl.store(grad_opacities_ptr + n, g_a.to(dtype), mask=mask_n)
    tl.store(grad_colors_ptr + col_offs, (a[None, :] * wv).to(dtype), mask=mask_nc)


def _size_bucket(n: int) -> int:
    """log2 of the work items, in steps of 2: the autotune key's size."""
    return 2 * (max(n, 1).bit_length() // 2)


def _slots(max_count: int, cap: int) -> int:
    """Pixels per cell along an axis held by one thread: a power of 2, at most `cap`."""
    return max(1, min(triton.next_power_of_2(max(max_count, 1)), cap))


def _fwd_launches(
    field: GaussianField, samples: Samples, radius: int
) -> tuple[Tensor, list[Launch]]:
    """The output [B, C, Ho, Wo] and the launches that fill it (pack, then render)."""
    b, h, w, g = field.shape
    c = field.channels
    ho, wo = samples.shape
    out = field.means.new_empty(b, c, ho, wo)  # the render writes every element
    if out.numel() == 0 or field.means.numel() == 0:
        return out.zero_(), []
    n_gauss, n_cells = b * h * w * g, b * h * w
    packed = torch.empty(n_gauss, 5 + c, device=out.device, dtype=torch.float32)
    pack = Launch(
        _pack_kernel,
        lambda meta: (triton.cdiv(n_gauss, 256),),
        (*field.tensors(), packed, n_gauss),
        {"C": c, "BLOCK": 256, "num_warps": 4, "enable_fp_fusion": FP_FUSION},
    )
    block_c = triton.next_power_of_2(c)
    sx = _slots(samples.max_cols, min(4, max(1, MAX_SLOTS // block_c)))
    sy = _slots(samples.max_rows, min(4, max(1, MAX_SLOTS // (block_c * sx))))
    ty, tx = triton.cdiv(samples.max_rows, sy), triton.cdiv(samples.max_cols, sx)

    def grid(meta):
        return triton.cdiv(n_cells, meta["BLOCK_N"]), ty * tx

    args: tuple[object, ...] = (packed, samples.row_first, samples.row_frac)
    args += (samples.col_first, samples.col_frac)
    args += (out, *out.stride(), n_cells, h, w, _size_bucket(n_cells * ty * tx))
    meta = {"G": g, "C": c, "R": radius, "SY": sy, "SX": sx, "TX": tx, "BLOCK_C": block_c}
    render = Launch(_fwd_kernel, grid, args, meta | {"enable_fp_fusion": FP_FUSION})
    return out, [pack, render]


def _fwd(field: GaussianField, samples: Samples, radius: int) -> Tensor:
    """Render: [B, C, Ho, Wo] in the field's dtype."""
    out, launches = _fwd_launches(field, samples, radius)
    for launch in launches:
        launch()
    return out


def _bwd_launches(
    field: GaussianField,
    samples: Samples,
    radius: int,
    grad_out: Tensor,  # [B, C, Ho, Wo]
) -> tuple[GaussianField, list[Launch]]:
    """The parameter gradients and the launch that fills them."""
    b, h, w, g = field.shape
    c = field.channels
    if grad_out.numel() == 0 or field.means.numel() == 0:
        return GaussianField(*(torch.zeros_like(t) for t in field.tensors())), []
    grads = GaussianField(*(torch.empty_like(t) for t in field.tensors()))
    n_gauss = b * h * w * g
    block_c = triton.next_power_of_2(c)
    sx = _slots(samples.max_cols, min(4, max(1, 16 // block_c)))

    def grid(meta):
        return (triton.cdiv(n_gauss, meta["BLOCK_N"]),)

    args: tuple[object, ...] = (*field.tensors(), grad_out, *grad_out.stride())
    args += (samples.row_first, samples.row_frac, samples.col_first, samples.col_frac)
    args += (*grads.tensors(), n_gauss, h, w)
    args += (samples.max_rows, triton.cdiv(samples.max_cols, sx), _size_bucket(n_gauss))
    meta = {"G": g, "C": c, "R": radius, "SX": sx, "BLOCK_C": block_c}
    return grads, [Launch(_bwd_kernel, grid, args, meta | {"enable_fp_fusion": FP_FUSION})]


def _bwd(field: GaussianField, samples: Samples, radius: int, grad_out: Tensor) -> GaussianField:
    """Gradients of sum(out * grad_out) with respect to the five parameter tensors."""
    grads, launches = _bwd_launches(field, samples, radius, grad_out)
    for launch in launches:
        launch()
    return grads


class _RasterizeFunction(torch.autograd.Function):
    """The Triton rasterizer as an autograd op: the launch helpers, nothing else."""

    @staticmethod
    def forward(ctx, samples, radius, *tensors):
        ctx.save_for_backward(*tensors)
        ctx.samples, ctx.radius = samples, radius
        return _fwd(GaussianField(*tensors), samples, radius)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        field = GaussianField(*ctx.saved_tensors)
        grads = _bwd(field, ctx.samples, ctx.radius, grad_out.contiguous())
        needed = ctx.needs_input_grad[2:]
        return None, None, *(g if n else None for g, n in zip(grads.tensors(), needed, strict=True))


def rasterize_triton(
    field: GaussianField,  # [B, H, W, G, ...], C colour channels, fp32, fp16 or bf16
    rows: AxisMap,  # Ho output rows, cells nondecreasing in [0, H)
    cols: AxisMap,  # Wo output columns, cells nondecreasing in [0, W)
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
    _, h, w, _ = field.shape
    samples = Samples.of(rows, cols, h, w, field.means.device)
    tensors = (t.contiguous() for t in field.tensors())
    return _RasterizeFunction.apply(samples, int(radius), *tensors)
