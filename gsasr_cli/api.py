"""The Python API: load a model once, upscale arrays, PIL images or files with one call.

    from gsasr_cli import load_model, upscale

    model = load_model()                      # the shipped weights, on CUDA if present
    big = upscale(array, scale=3.7, model=model)
    hd = upscale(pil_image, size=(1920, 1080), model=model, tta=True)

`upscale` returns what it was given: a NumPy array of the same dtype and layout (HxW,
HxWx1, HxWx3 or HxWx4, RGB order), or a PIL image of the same mode; a path gives an array
(RGB or RGBA, uint8 or uint16, EXIF orientation applied). Bit depth, grey and alpha are
kept as by `gsasr upscale`. A model is safe to share between threads for inference.
Errors are `GsasrError` (an image that cannot be read or upscaled) or `ValueError`
(arguments that cannot work; `InvalidRequest` is both).
"""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import GsasrError, InvalidRequest
from .imageio import Image, read_image
from .options import AlphaMode, Precision, UpscaleOptions
from .sizing import MAX_OUTPUT_PIXELS, Sizing

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

    from .model import GSASR

_lock = threading.Lock()
_default: dict[str, GSASR] = {}


def load_model(weights: str | os.PathLike[str] | None = None, device: str = "auto") -> GSASR:
    """Load weights (default: the shipped model) onto `device` ("auto", "cpu", "cuda:N"),
    in eval mode. Raises GsasrError for a missing or unusable file."""
    from .inference import resolve_device
    from .weights_io import load_model as load_weights

    return load_weights(Path(weights) if weights is not None else None, resolve_device(device))


def default_model(device: str = "auto") -> GSASR:
    """The shipped model on `device`, loaded on first use and shared (thread-safe)."""
    from .inference import resolve_device

    key = str(resolve_device(device))
    with _lock:
        if key not in _default:
            _default[key] = load_model(None, key)
        return _default[key]


def upscale(
    image: Any,
    *,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    width: int | None = None,
    height: int | None = None,
    fit: tuple[int, int] | None = None,
    model: GSASR | None = None,
    device: str = "auto",
    tile: int | str = "auto",
    precision: Precision | str = Precision.FP32,
    tta: bool = False,
    alpha: AlphaMode | str = AlphaMode.BICUBIC,
    max_output_pixels: int = MAX_OUTPUT_PIXELS,
    on_tile: Callable[[int, int], None] | None = None,
) -> Any:
    """Upscale `image` by `scale`, to `width` or `height` (aspect kept), to an exact
    `size` = (width, height), or to the largest size that `fit`s in (width, height);
    give exactly one of the five.

    `model` defaults to the shipped weights on `device`. `tile`: an LR tile side, 0 for
    untiled or "auto" (the largest that fits in free memory; the result is identical).
    `precision` fp16/bf16 needs CUDA. `tta` averages the 8 flips and transposes (8x the
    time). `alpha`: "bicubic" or "model" for the alpha plane. `on_tile(done, total)`
    reports progress.
    """
    sizing = Sizing.of(scale=scale, width=width, height=height, size=size, fit=fit)
    options = _options(tile, precision, tta, alpha)
    if isinstance(max_output_pixels, bool) or not isinstance(max_output_pixels, numbers.Integral):
        raise InvalidRequest(f"max_output_pixels must be a whole number, got {max_output_pixels!r}")
    from .model import GSASR

    if model is not None and not isinstance(model, GSASR):
        raise InvalidRequest(f"model must be one from load_model(), got {type(model).__name__}")
    if model is None:
        model = default_model(device)
    elif device != "auto":
        from .inference import resolve_device

        if resolve_device(device) != _device_of(model):
            raise InvalidRequest(f"the model is on {_device_of(model)}, not on {device}")
    shape = _shape_of(image)
    if shape is not None:  # an impossible size is refused before the image is converted
        sizing.target(*shape, max_pixels=max_output_pixels)
    src, restore = _to_image(image)
    out_size, factors = sizing.target(*src.size, max_pixels=max_output_pixels)
    from .inference import upscale_image

    result, _ = upscale_image(model, src, out_size, factors, _device_of(model), options, on_tile)
    return restore(result)


def _options(tile: int | str, precision: Any, tta: bool, alpha: Any) -> UpscaleOptions:
    from .tiling import MIN_TILE

    if not (tile == "auto" or (isinstance(tile, int) and (tile == 0 or tile >= MIN_TILE))):
        raise InvalidRequest(
            f"tile must be 'auto', 0 (untiled) or at least {MIN_TILE}, got {tile!r}"
        )
    try:
        return UpscaleOptions(tile, Precision(precision), bool(tta), AlphaMode(alpha))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def _device_of(model: GSASR) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------------------------ conversions


def _shape_of(obj: Any) -> tuple[int, int] | None:
    """(height, width) of an array or PIL image with pixels, read without converting it."""
    if isinstance(obj, np.ndarray) and obj.ndim in (2, 3) and min(obj.shape[:2]) > 0:
        return obj.shape[0], obj.shape[1]
    size = getattr(obj, "size", None)  # PIL: (width, height)
    if not isinstance(obj, (str, os.PathLike, np.ndarray)) and isinstance(size, tuple):
        if len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size):
            return size[1], size[0]
    return None


def _to_image(obj: Any) -> tuple[Image, Callable[[Image], Any]]:
    """An `Image` from an array, a PIL image or a path, and how to turn a result back."""
    if isinstance(obj, np.ndarray):
        return _from_array(obj)
    if isinstance(obj, (str, os.PathLike)):
        img = read_image(Path(obj))
        dtype = np.uint16 if img.bits == 16 else np.uint8
        # The file's layout, as the CLI writes it: grey with alpha comes back RGBA.
        layout = "rgba" if img.alpha is not None else "grey" if img.grey else "rgb"
        return img, lambda r: _pack(r, dtype, layout)
    from PIL import Image as PIL

    if isinstance(obj, PIL.Image):
        return _from_pil(obj)
    raise InvalidRequest(
        f"cannot upscale a {type(obj).__name__}: give a NumPy array, a PIL image or a path"
    )


def _from_array(a: np.ndarray) -> tuple[Image, Callable[[Image], np.ndarray]]:
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1):
        layout = "grey" if a.ndim == 2 else "grey1"
        planes = a.reshape(a.shape[0], a.shape[1], 1)
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        layout, planes = ("rgb" if a.shape[2] == 3 else "rgba"), a
    else:
        raise InvalidRequest(f"array of shape {a.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")
    if min(a.shape[:2]) < 1:
        raise InvalidRequest(f"array of shape {a.shape} has no pixels")
    native = a.dtype.newbyteorder("=")  # a big-endian ">u2" is uint16 too
    if native == np.uint8:
        bits, x = 8, planes.astype(np.float32) / 255.0
    elif native == np.uint16:
        bits, x = 16, planes.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        x = planes.astype(np.float32)
        if not np.isfinite(x).all():
            raise InvalidRequest("the array holds NaN or Inf")
        lo, hi = float(x.min()), float(x.max())
        # Clipping more than half a 16-bit level would change the image (0-255 floats would
        # come out white), so that is refused; float noise at the ends is clipped.
        if lo < -0.5 / 65535 or hi > 1 + 0.5 / 65535:
            raise InvalidRequest(
                f"float samples must lie in [0, 1], got {lo:.6g} to {hi:.6g} "
                "(divide 0-255 floats by 255; clip values that overshoot)"
            )
        bits, x = 16, np.clip(x, 0.0, 1.0)  # 16: no 8-bit rounding of a float result
    else:
        raise InvalidRequest(f"array dtype {a.dtype}: expected uint8, uint16 or float in [0, 1]")
    grey = layout.startswith("grey")
    rgb = np.repeat(x, 3, axis=2) if grey else np.ascontiguousarray(x[:, :, :3])
    alpha = np.ascontiguousarray(x[:, :, 3]) if layout == "rgba" else None
    return Image(rgb, alpha, bits, grey), lambda r: _pack(r, a.dtype, layout)


def _pack(r: Image, dtype: Any, layout: str) -> np.ndarray:
    """A result as an array of `dtype` in `layout` (grey, grey1, rgb, rgba)."""
    x = np.clip(r.rgb, 0.0, 1.0)
    if layout.startswith("grey"):
        x = x.mean(axis=2, keepdims=True)
    elif r.grey:  # a grey image in colour samples: all three equal, as the CLI writes it
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if r.alpha is not None and layout == "rgba":
        x = np.concatenate([x, r.alpha[:, :, None]], axis=2)
    if layout == "grey":
        x = x[:, :, 0]
    dtype = np.dtype(dtype)
    native = dtype.newbyteorder("=")
    if native == np.uint8 or native == np.uint16:
        peak = 255.0 if native == np.uint8 else 65535.0
        return np.rint(x * peak).astype(dtype)
    return x.astype(dtype)


def _from_pil(im: PILImage) -> tuple[Image, Callable[[Image], PILImage]]:
    from PIL import Image as PIL

    mode = im.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in im.info else "RGB"
    elif mode in ("1", "CMYK", "YCbCr", "HSV", "LAB", "RGBX", "RGBa", "La", "F"):
        mode = {"1": "L", "La": "LA", "RGBa": "RGBA", "F": "F"}.get(mode, "RGB")
    if mode == "F":  # float samples, in [0, 1] as for float arrays
        img, _ = _from_array(np.asarray(im, dtype=np.float32))
        back = mode
    elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        try:  # a lazily opened file is decoded here
            a = np.asarray(im.convert("I") if im.mode != "I" else im, dtype=np.int64)
        except OSError as exc:
            raise GsasrError(f"PIL image: cannot be read ({exc})") from exc
        if a.size and (a.min() < 0 or a.max() > 65535):  # clipping would change the image
            raise InvalidRequest(
                f"PIL image mode {im.mode}: samples must be 0-65535 (16-bit), "
                f"got {a.min()} to {a.max()}"
            )
        img, _ = _from_array(a.astype(np.uint16))
        back = "I" if im.mode == "I" else "I;16"
    elif mode == "LA":  # grey plus alpha
        a = np.asarray(im.convert("LA"))
        img, _ = _from_array(a[:, :, 0])
        img.alpha = a[:, :, 1].astype(np.float32) / 255.0
        back = mode
    elif mode in ("L", "RGB", "RGBA"):
        try:  # a lazily opened file is decoded here
            pixels = np.asarray(im.convert(mode) if mode != im.mode else im)
        except OSError as exc:
            raise GsasrError(f"PIL image: cannot be read ({exc})") from exc
        img, _ = _from_array(pixels)
        back = mode
    else:
        raise InvalidRequest(f"PIL image mode {im.mode} is not supported")

    def restore(r: Image) -> PILImage:
        if back == "F":
            return PIL.fromarray(_pack(r, np.float32, "grey"), "F")
        if back in ("I", "I;16"):
            grey = _pack(r, np.uint16, "grey")
            return PIL.fromarray(grey.astype(np.int32), "I") if back == "I" else PIL.fromarray(grey)
        if back == "LA":
            grey = _pack(r, np.uint8, "grey")
            assert r.alpha is not None
            alpha = np.rint(np.clip(r.alpha, 0, 1) * 255).astype(np.uint8)
            return PIL.fromarray(np.stack([grey, alpha], axis=2), "LA")
        layout = {"L": "grey", "RGB": "rgb", "RGBA": "rgba"}[back]
        return PIL.fromarray(_pack(r, np.uint8, layout), back)

    return img, restore
