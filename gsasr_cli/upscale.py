"""Upscaling an image with the model: sizes, devices, and the inference call."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from gsasr_kernels import axis_map

from .errors import GsasrError
from .imageio import Image
from .model import GSASR
from .resize import imresize


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """s times the input size, rounded to the nearest pixel (halves round up)."""
    return _round(height * scale), _round(width * scale)


def _round(x: float) -> int:
    return max(1, math.floor(x + 0.5))


@dataclass(frozen=True)
class Sizing:
    """How big the output is: exactly one of a scale, a width, a height or a size."""

    scale: float | None = None
    width: int | None = None  # height follows, aspect ratio kept
    height: int | None = None  # width follows, aspect ratio kept
    size: tuple[int, int] | None = None  # (width, height), exact: per-axis scales

    def target(self, height: int, width: int) -> tuple[tuple[int, int], tuple[float, float]]:
        """((out_h, out_w), (scale_y, scale_x)) for an input of `height` x `width`."""
        if self.scale is not None:
            return output_size(height, width, self.scale), (self.scale, self.scale)
        if self.width is not None:
            s = self.width / width
            return (_round(height * s), self.width), (s, s)
        if self.height is not None:
            s = self.height / height
            return (self.height, _round(width * s)), (s, s)
        assert self.size is not None
        w, h = self.size
        return (h, w), (h / height, w / width)

    def suffix(self, out_size: tuple[int, int]) -> str:
        """File-name suffix: `_x3.7` for a scale, `_1920x1080` for a size."""
        if self.scale is not None:
            return f"_x{self.scale:g}"
        return f"_{out_size[1]}x{out_size[0]}"


def resolve_device(spec: str) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> a usable torch.device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise GsasrError(f"--device {spec}: not a device (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GsasrError(f"--device {spec}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GsasrError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise GsasrError(f"--device {spec}: unsupported device type (use auto, cpu or cuda)")
    return device


@torch.inference_mode()
def upscale_rgb(
    model: GSASR,
    rgb: np.ndarray,  # [H, W, 3] float32 in [0, 1]
    out_size: tuple[int, int],
    scale: tuple[float, float],
    device: torch.device,
) -> np.ndarray:  # [Ho, Wo, 3] float32, not clamped
    """Render `rgb` at `out_size`, sampling output pixel j at LR coordinate (j + 0.5) / scale."""
    lr = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
    h, w = rgb.shape[:2]
    field = model.gaussians(lr, scale)
    out = model.render(
        field, axis_map(out_size[0], scale[0], h), axis_map(out_size[1], scale[1], w)
    )
    return out[0].permute(1, 2, 0).float().cpu().numpy()


def upscale_image(
    model: GSASR,
    image: Image,
    out_size: tuple[int, int],
    scale: tuple[float, float],
    device: torch.device,
    alpha_mode: str = "bicubic",
    tile: int | str = "auto",
    precision: str = "fp32",
    on_tile: Callable[[int, int], None] | None = None,
) -> tuple[Image, int]:
    """Upscale colour with the model, in exact tiles; alpha with MATLAB bicubic or the model.

    `tile` is an LR tile side, 0 for untiled, or "auto" (the largest that fits in free
    memory). Returns the image and the tile side finally used.
    """
    from .tiling import auto_tile, upscale_tiled_result

    h, w = image.size
    side = auto_tile(model, (h, w), out_size, scale, device) if tile == "auto" else int(tile)

    def run(rgb: np.ndarray) -> tuple[np.ndarray, int]:
        res = upscale_tiled_result(
            model, rgb, out_size, scale, device, side, precision=precision, on_tile=on_tile
        )
        return res.image, res.tile

    rgb, used = run(image.rgb)
    alpha = None
    if image.alpha is not None:
        if alpha_mode == "model":
            planes, _ = run(np.repeat(image.alpha[:, :, None], 3, axis=2))
            alpha = planes.mean(axis=2)
        else:
            plane = torch.from_numpy(image.alpha).double()
            alpha = imresize(plane, *out_size).float().numpy()
        alpha = np.clip(alpha, 0.0, 1.0)
    return Image(rgb, alpha, image.bits, image.grey, image.meta), used
