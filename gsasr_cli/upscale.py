"""Upscaling an image with the model: sizes, devices, and the inference call."""

from __future__ import annotations

import math

import numpy as np
import torch

from gsasr_kernels import axis_map

from .errors import GsasrError
from .imageio import Image
from .model import GSASR
from .resize import imresize


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """s times the input size, rounded to the nearest pixel (halves round up)."""
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


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
    out = model.render(field, axis_map(out_size[0], scale[0], h), axis_map(out_size[1], scale[1], w))
    return out[0].permute(1, 2, 0).float().cpu().numpy()


def upscale_image(
    model: GSASR, image: Image, out_size: tuple[int, int], scale: tuple[float, float],
    device: torch.device,
) -> Image:
    """Upscale colour with the model; an alpha plane, if any, with MATLAB bicubic."""
    rgb = upscale_rgb(model, image.rgb, out_size, scale, device)
    alpha = None
    if image.alpha is not None:
        plane = torch.from_numpy(image.alpha).double()
        alpha = imresize(plane, *out_size).clamp(0, 1).float().numpy()
    return Image(rgb, alpha, image.bits, image.grey)
