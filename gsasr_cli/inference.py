"""Upscaling an image with the model: sizes, devices, and the inference call."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .errors import GsasrError, InvalidRequest
from .imageio import Image
from .model import GSASR
from .options import DEFAULT_OPTIONS, AlphaMode, UpscaleOptions
from .resize import imresize
from .sizing import MAX_OUTPUT_PIXELS, Sizing, output_size

__all__ = [
    "MAX_OUTPUT_PIXELS",
    "Sizing",
    "check_rasterizer",
    "output_size",
    "resolve_device",
    "upscale_image",
]


def resolve_device(spec: str | torch.device) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> a usable torch.device; InvalidRequest otherwise."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise InvalidRequest(
            f"device {spec!r}: not a device (use auto, cpu, cuda or cuda:N)"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidRequest(f"device {spec!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidRequest(
                f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type != "cpu":
        raise InvalidRequest(f"device {spec!r}: unsupported device type (use auto, cpu or cuda)")
    return device


def check_rasterizer(device: str | torch.device) -> None:
    """InvalidRequest if GSASR_RASTERIZER names a rasterizer that cannot run on `device`
    (a torch.device, or "auto", "cpu", "cuda" or "cuda:N" before it is resolved)."""
    from gsasr_kernels import rasterizer_path

    if isinstance(device, torch.device):
        kind = device.type
    elif device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = "cuda" if device.startswith("cuda") else "cpu"
    name, why = rasterizer_path(kind)
    if name == "unavailable":
        raise InvalidRequest(why)


def upscale_image(
    model: GSASR,
    image: Image,
    out_size: tuple[int, int],
    scale: tuple[float, float],
    device: torch.device,
    options: UpscaleOptions = DEFAULT_OPTIONS,
    on_tile: Callable[[int, int], None] | None = None,
) -> tuple[Image, int]:
    """Upscale colour with the model, in exact tiles; alpha with MATLAB bicubic or the model.

    Returns the image and the LR tile side finally used. `on_tile(done, total)` counts
    tile passes (with the alpha plane through the model, its passes follow the colour's).
    """
    from .tiling import auto_tile, upscale_tiled

    check_rasterizer(device)
    h, w = image.size
    if out_size == (h, w) and scale == (1.0, 1.0):  # x1 is the image itself, not a re-render
        alpha = None if image.alpha is None else image.alpha.copy()
        return Image(image.rgb.copy(), alpha, image.bits, image.grey, image.meta), 0
    tile = options.tile
    side = auto_tile(model, (h, w), out_size, scale, device) if tile == "auto" else int(tile)

    def run(rgb: np.ndarray) -> tuple[np.ndarray, int]:
        res = upscale_tiled(
            model,
            rgb,
            out_size,
            scale,
            device,
            side,
            precision=options.precision,
            tta=options.tta,
            on_tile=on_tile,
        )
        return res.image, res.tile

    rgb, used = run(image.rgb)
    if not np.isfinite(rgb).all():
        raise GsasrError("the model produced non-finite values (are the weights corrupt?)")
    alpha = None
    if image.alpha is not None:
        if AlphaMode(options.alpha) is AlphaMode.MODEL:
            planes, _ = run(np.repeat(image.alpha[:, :, None], 3, axis=2))
            alpha = planes.mean(axis=2)
        else:
            plane = torch.from_numpy(image.alpha).double()
            alpha = imresize(plane, *out_size).float().numpy()
        alpha = np.clip(alpha, 0.0, 1.0)
    return Image(rgb, alpha, image.bits, image.grey, image.meta), used
