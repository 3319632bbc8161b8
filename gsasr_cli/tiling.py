"""Tiled inference: exact, seam-free, in bounded memory.

The network is convolutions only (zero padding), so it is translation-equivariant: the
Gaussians of an LR cell depend only on the input within the receptive radius of that
cell. A tile computed on its own cells plus a halo of (receptive radius + rendering
radius) therefore yields exactly the whole-image Gaussians of its own cells and of the
`cfg.radius` cells around them; the rasterizer, fed global coordinates, then renders the
tile's own output pixels (those whose LR cell lies in the tile) exactly as the whole
image would. At the image border the halo is clipped, so the convolutions zero-pad
there just as in the whole-image run.

Only the current tile lives on the device; the output is one preallocated float32 array
on the host. On out-of-memory the tile is halved and the failed tile retried.

Bit-exactness also needs every operation to round a value the same way whatever the
tensor's size. On the CPU two things do not: PyTorch picks oneDNN or its native kernel
for a convolution by input size (handled here: windows are grown to the whole image's
side of that line), and `torch.sigmoid` rounds the scalar tail of its vector loop
differently (1 ulp, a few pixels of the image's last row; a sigmoid written through tanh
in the model would remove it, see tests/test_tiling.py). On CUDA, cuDNN may pick another
convolution algorithm for another shape, so tiles may differ from the whole image by
float rounding there (not checked: no GPU when this was written).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from gsasr_kernels import axis_map

from .errors import GsasrError, InvalidRequest
from .model import GSASR, ModelConfig
from .options import Precision
from .tta import ENSEMBLE, IDENTITY, Transform

MIN_TILE = 16  # below this the halo dominates the work; give up instead
_AUTOCAST = {Precision.FP32: None, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}

# Peak memory of one tile, fp32 (see `tile_bytes`). Measured on the CPU with
# `benchmarks/bench_memory.py --cost-model` (peak RSS growth of fresh processes, output
# array removed): the network phase peaks at 15-18 B per LR pixel per feature (n_feats 64,
# 320^2 LR px), about 4.5 live feature maps; the rendering phase, with `anchored`
# rendering and the palette clamp, at 42 B per output pixel (fit over 256^2 and 512^2 LR at
# x2, x4 and x8: the rasterizer's 4-channel output in chunks plus their concatenation,
# 2 x 4 x 4 B, then the bilinear base and the clamp's bounds, one 3-channel plane at a
# time) against 48 B counted here. The two phases do not overlap, so adding them is
# conservative. The fixed part is the rasterizer's working set for one chunk of output
# rows, which grows with the Gaussians per LR pixel: fitted at about 30 MB with 4 and
# 120 MB with 16. Not measured on CUDA (no GPU here): cuDNN workspaces come out of SAFETY.
BYTES_PER_LR_PIXEL_PER_FEAT = 20
BYTES_PER_HR_PIXEL = 48
FIXED_BYTES = 32 << 20
FIXED_BYTES_PER_GAUSSIAN = 8 << 20  # per Gaussian per LR pixel
SAFETY = 0.6  # use at most this fraction of the free memory
# On a CPU, tiles beyond about 700 LR px cut the halo's overhead below 25% and buy little
# speed, while peak memory keeps growing: cap a tile's estimate so a large image stays well
# within a laptop's RAM (2048x2048 at x4 under 2.5 GB peak, see benchmarks/bench_memory.py).
CPU_TILE_BYTES = 1 << 30
_CPU_ONEDNN_MIN_NUMEL = 20480  # aten use_mkldnn(): 3x3, batch 1, fp32 convs above this numel


@dataclass(frozen=True)
class TiledResult:
    """The upscaled image and how it was computed."""

    image: np.ndarray  # [Ho, Wo, 3] float32, not clamped
    tile: int  # LR tile side finally used (after any halving); max(H, W) when untiled
    tiles: int  # tiles rendered
    oom_retries: int  # times the tile was halved after running out of memory
    fp32_fallbacks: int  # tiles recomputed in fp32 because fp16/bf16 gave NaN or Inf


def receptive_radii(cfg: ModelConfig) -> tuple[int, int]:
    """LR pixels on each side that encoder and decoder outputs depend on: one per 3x3 conv
    (the decoder's Gaussian colours also read the LR pixels `cfg.color_radius` away)."""
    encoder = 1 + 2 * cfg.n_resblocks + 1  # head, two per residual block, tail
    decoder = max(2 * cfg.decoder_blocks, cfg.color_radius)  # its 1x1 head adds nothing
    return encoder, decoder


def halo(cfg: ModelConfig) -> int:
    """LR pixels of context a tile needs on each side for exact results."""
    return sum(receptive_radii(cfg)) + cfg.radius


def autocast_dtype(precision: Precision | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, None for fp32; raises if unsupported."""
    precision = Precision(precision)
    dtype = _AUTOCAST[precision]
    if dtype is None:
        return None
    if device.type != "cuda":
        raise InvalidRequest(
            f"{precision.value} inference needs a CUDA device; on {device.type} use fp32"
        )
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise InvalidRequest(f"{torch.cuda.get_device_name(device)} does not support bf16")
    return dtype


def tile_bytes(cfg: ModelConfig, rows: int, cols: int, out_pixels: float) -> int:
    """Estimated peak memory of one tile whose computed region (halo included) is
    `rows` x `cols` LR pixels and whose own output has `out_pixels` pixels."""
    lr = rows * cols * BYTES_PER_LR_PIXEL_PER_FEAT * cfg.n_feats
    fixed = FIXED_BYTES + FIXED_BYTES_PER_GAUSSIAN * cfg.gaussians_per_pixel
    return int(lr + out_pixels * BYTES_PER_HR_PIXEL + fixed)


def free_memory(device: torch.device) -> int:
    """Bytes free for a tile: CUDA's free memory plus what its allocator caches; on a CPU,
    MemAvailable from /proc/meminfo (or 4 GiB when unreadable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def auto_tile(
    model: GSASR,
    lr_size: tuple[int, int],
    out_size: tuple[int, int],
    scale: tuple[float, float],
    device: torch.device,
) -> int:
    """The largest LR tile side whose estimated peak fits in SAFETY x the free memory.

    Returns 0 (untiled) when the whole image fits, a multiple of 16 otherwise, and
    MIN_TILE when nothing fits (the tiler then reports out of memory). On a CPU the host
    output shares the memory, so its size is taken off first, and a tile's estimate is
    capped at CPU_TILE_BYTES.
    """
    h, w = lr_size
    budget = SAFETY * free_memory(device)
    if device.type != "cuda":
        budget = min(budget - out_size[0] * out_size[1] * 3 * 4, CPU_TILE_BYTES)
    pad = 2 * halo(model.cfg)

    def fits(t: int) -> bool:
        rows, cols = min(t + pad, h), min(t + pad, w)
        out_px = min(t, h) * min(t, w) * scale[0] * scale[1]
        return tile_bytes(model.cfg, rows, cols, out_px) <= budget

    if fits(max(h, w)):
        return 0
    lo, hi = 1, max(h, w) // 16  # in units of 16
    while lo < hi:  # largest k with fits(16 k), or 1
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(16 * mid) else (lo, mid - 1)
    return max(MIN_TILE, 16 * lo)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure (CUDA, or the CPU allocator)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text
        for s in (
            "out of memory",
            "can't allocate memory",
            "not enough memory",
            "failed to allocate",
        )
    )


@dataclass(frozen=True)
class Tile:
    """A tile's own LR cells and the output pixels whose LR cell lies among them."""

    cells: tuple[int, int, int, int]  # (y0, y1, x0, x1)
    rows: tuple[int, int]  # output rows [o0, o1)
    cols: tuple[int, int]  # output columns [p0, p1)


@dataclass(frozen=True)
class _Pass:
    """What every tile of one image is rendered with."""

    model: GSASR
    rgb: np.ndarray  # [H, W, 3] float32 in [0, 1], the whole LR image
    scale: tuple[float, float]
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype of the network, None for fp32
    transforms: tuple[Transform, ...]  # (IDENTITY,), or the self-ensemble
    on_pass: Callable[[int], None] | None = None  # called with k after the k-th transform


def render_region(run: _Pass, tile: Tile) -> np.ndarray:  # [o1 - o0, p1 - p0, 3] float32
    """Run the network on a tile plus its halo and render the tile's own output pixels,
    averaged over `run.transforms`."""
    model, (h, w, _) = run.model, run.rgb.shape
    cfg = model.cfg
    enc, dec = receptive_radii(cfg)
    # Three nested windows, clipped to the image: the cells rendered from (tile + radius),
    # the cells decoded (+ the decoder's radius), the cells encoded (+ the encoder's).
    ny0, ny1, nx0, nx1 = _widen(tile.cells, cfg.radius, h, w)
    dy0, dy1, dx0, dx1 = _widen((ny0, ny1, nx0, nx1), dec, h, w)
    if run.device.type == "cpu":
        dy0, dy1, dx0, dx1 = _same_cpu_backend((dy0, dy1, dx0, dx1), h, w)
    cy0, cy1, cx0, cx1 = _widen((dy0, dy1, dx0, dx1), enc, h, w)
    lr = torch.from_numpy(np.ascontiguousarray(run.rgb[cy0:cy1, cx0:cx1]))
    lr = lr.permute(2, 0, 1)[None].to(run.device)
    # The decoder only needs the encoder's output on its own (smaller) window.
    sy, sx = slice(dy0 - cy0, dy1 - cy0), slice(dx0 - cx0, dx1 - cx0)
    (o0, o1), (p0, p1) = tile.rows, tile.cols
    rows = axis_map(o1 - o0, run.scale[0], h, out_start=o0, lr_start=ny0)
    cols = axis_map(p1 - p0, run.scale[1], w, out_start=p0, lr_start=nx0)
    amp = (
        torch.autocast(run.device.type, dtype=run.dtype)
        if run.dtype is not None
        else contextlib.nullcontext()
    )
    # Computed untransformed (it is symmetric), once, from the widest window: exact.
    guard = model.guard(lr)[..., ny0 - cy0 : ny1 - cy0, nx0 - cx0 : nx1 - cx0]
    total = None
    for k, t in enumerate(run.transforms, 1):
        with amp:
            feat = t.inverse_image(model.encoder(t.image(lr)))
            field = model.decode(
                t.image(lr[:, :, sy, sx]), t.image(feat[:, :, sy, sx]), t.scale(run.scale)
            )
        del feat
        # float32 to render: autocast may leave fp16/bf16.
        field = t.inverse_field(field).crop(ny0 - dy0, ny1 - dy0, nx0 - dx0, nx1 - dx0).float()
        out = model.render(field, rows, cols, guard)
        total = out if total is None else total + out
        if run.on_pass is not None:
            run.on_pass(k)
    assert total is not None
    if len(run.transforms) > 1:
        total = total / len(run.transforms)
    return total[0].permute(1, 2, 0).float().cpu().numpy()


def _pass_done(on_tile: Callable[[int, int], None], ahead: int, todo: int, k: int) -> None:
    on_tile(ahead + k, todo)


def _widen(window: tuple[int, ...], by: int, h: int, w: int) -> tuple[int, int, int, int]:
    """A window (y0, y1, x0, x1) widened by `by` on each side, clipped to h x w."""
    y0, y1, x0, x1 = window
    return max(0, y0 - by), min(h, y1 + by), max(0, x0 - by), min(w, x1 + by)


def _grow(a0: int, a1: int, n: int, length: int) -> tuple[int, int]:
    """Widen [a0, a1) inside [0, n) to min(n, length) cells, about its middle."""
    length = min(n, length)
    if a1 - a0 >= length:
        return a0, a1
    a0 = max(0, a0 - (length - (a1 - a0)) // 2)
    a1 = min(n, a0 + length)
    return a1 - length, a1


def _same_cpu_backend(
    window: tuple[int, int, int, int], h: int, w: int
) -> tuple[int, int, int, int]:
    """Grow a window (y0, y1, x0, x1) of an h x w image so that every convolution on it
    takes the same CPU backend as on the whole image.

    PyTorch runs a batch-1 3x3 convolution with oneDNN only when its input has more than
    20480 elements, and with its native kernel otherwise; the two round differently
    (about 1e-6), so a small edge tile would not match the whole image bit for bit. A
    window of at least min(h w, 20480 / 3 + 1) pixels is on the same side of that line
    as the whole image for every layer (3 input channels or more). More context never
    changes the result, so growing is safe; it only costs on small edge tiles.
    """
    need = min(h * w, _CPU_ONEDNN_MIN_NUMEL // 3 + 1)
    y0, y1, x0, x1 = window
    if (y1 - y0) * (x1 - x0) >= need:
        return window
    y0, y1 = _grow(y0, y1, h, -(-need // (x1 - x0)))
    x0, x1 = _grow(x0, x1, w, -(-need // (y1 - y0)))
    return y0, y1, x0, x1


def _split(region: tuple[int, int, int, int], tile: int) -> list[tuple[int, int, int, int]]:
    """Cover `region` (y0, y1, x0, x1) with tiles of side `tile`, row-major."""
    y0, y1, x0, x1 = region
    return [
        (ty, min(ty + tile, y1), tx, min(tx + tile, x1))
        for ty in range(y0, y1, tile)
        for tx in range(x0, x1, tile)
    ]


def _output_span(cells: np.ndarray, c0: int, c1: int) -> tuple[int, int]:
    """Output indices whose LR cell lies in [c0, c1); `cells` is non-decreasing."""
    return int(np.searchsorted(cells, c0, "left")), int(np.searchsorted(cells, c1, "left"))


@torch.inference_mode()
def upscale_tiled(
    model: GSASR,
    rgb: np.ndarray,  # [H, W, 3] float32 in [0, 1]
    out_size: tuple[int, int],
    scale: tuple[float, float],
    device: torch.device,
    tile: int = 0,
    *,
    precision: Precision | str = Precision.FP32,
    tta: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
) -> TiledResult:
    """Render `rgb` at `out_size` in LR tiles of `tile` x `tile` cells (0: untiled); the
    tiled output equals the untiled one exactly.

    Output pixel j samples LR coordinate (j + 0.5) / scale. `precision` fp16/bf16 runs the
    network under autocast (CUDA only); a tile that comes out non-finite is redone in fp32.
    `tta` averages the 8 flips and transposes (see `tta.py`). `on_tile(done, total)` is
    called after each tile, or with `tta` after each of its 8 passes (counting passes);
    an out-of-memory error halves the tile and retries.
    """
    h, w = rgb.shape[:2]
    if tile < 0 or 0 < tile < MIN_TILE:
        raise ValueError(f"tile side {tile}: use 0 (untiled) or at least {MIN_TILE}")
    run = _Pass(
        model,
        rgb,
        scale,
        device,
        autocast_dtype(precision, device),
        ENSEMBLE if tta else (IDENTITY,),
    )
    tile = tile or max(h, w)
    ho, wo = out_size
    row_cells = axis_map(ho, scale[0], h).cell.numpy()
    col_cells = axis_map(wo, scale[1], w).cell.numpy()
    out = np.empty((ho, wo, 3), np.float32)
    pending = deque(_split((0, h, 0, w), tile))
    done = retries = fallbacks = 0
    while pending:
        region = pending[0]
        part = Tile(
            region, _output_span(row_cells, *region[:2]), _output_span(col_cells, *region[2:])
        )
        (o0, o1), (p0, p1) = part.rows, part.cols
        oom: BaseException | None = None
        passes = len(run.transforms)
        if on_tile is not None and passes > 1:  # progress in transform passes
            ahead, todo = done * passes, (done + len(pending)) * passes
            run = replace(run, on_pass=functools.partial(_pass_done, on_tile, ahead, todo))
        if o1 > o0 and p1 > p0:  # a tile can own no output pixel when the scale is below 1
            try:
                pixels = render_region(run, part)
                if run.dtype is not None and not np.isfinite(pixels).all():
                    pixels = render_region(replace(run, dtype=None, on_pass=None), part)
                    fallbacks += 1
                out[o0:o1, p0:p1] = pixels
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                oom = exc
        if oom is not None:
            # Retry outside the except block, so that the traceback frees the tile's tensors.
            new = math.ceil(tile / 2) if tile >= max(h, w) else tile // 2
            if new < MIN_TILE:
                raise GsasrError(
                    f"out of memory on {device} even with {tile}x{tile} LR tiles "
                    f"(halo {halo(model.cfg)}): {str(oom).splitlines()[0][:200]}"
                ) from oom
            del oom
            if device.type == "cuda":
                torch.cuda.empty_cache()
            tile, retries = new, retries + 1
            pending = deque(t for reg in pending for t in _split(reg, tile))
            continue
        pending.popleft()
        done += 1
        if on_tile is not None and passes == 1:
            on_tile(done, done + len(pending))
    return TiledResult(out, tile, done, retries, fallbacks)
