"""The choices of an upscale, as enums (the CLI's Typer options validate them itself)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Precision(str, Enum):
    """Arithmetic of the network: fp16/bf16 run under autocast on CUDA only."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class AlphaMode(str, Enum):
    """How an alpha plane is enlarged: MATLAB bicubic, or the model on its grey image."""

    BICUBIC = "bicubic"
    MODEL = "model"


@dataclass(frozen=True)
class UpscaleOptions:
    """How to run the model on an image; every field has the CLI's default."""

    tile: int | str = "auto"  # LR tile side, 0 untiled, or "auto" (largest that fits)
    precision: Precision = Precision.FP32
    tta: bool = False  # average the 8 flips and transposes
    alpha: AlphaMode = AlphaMode.BICUBIC


DEFAULT_OPTIONS = UpscaleOptions()
