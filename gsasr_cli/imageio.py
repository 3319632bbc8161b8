"""Reading and writing images: formats, bit depths, grey and alpha, atomic writes.

Images are decoded from bytes (so any path, including non-ASCII ones, works and the
format is detected from the content) into float32 RGB in [0, 1] plus what is needed
to write the result back the way it came in: bit depth, grey or colour, alpha plane.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import GsasrError
from .metadata import (
    Metadata,
    apply_orientation,
    embed,
    encode_with_metadata,
    has_metadata,
    read_metadata,
)

# Extension -> (OpenCV encoder extension, can hold 16 bits, can hold alpha)
FORMATS: dict[str, tuple[str, bool, bool]] = {
    ".png": (".png", True, True),
    ".jpg": (".jpg", False, False),
    ".jpeg": (".jpg", False, False),
    ".webp": (".webp", False, True),
    ".tif": (".tif", True, True),
    ".tiff": (".tif", True, True),
    ".bmp": (".bmp", False, False),
}


@dataclass
class Image:
    """An image as the model sees it, plus how to write it back."""

    rgb: np.ndarray  # [H, W, 3] float32 in [0, 1]
    alpha: np.ndarray | None  # [H, W] float32 in [0, 1], or None
    bits: int  # 8 or 16
    grey: bool  # single channel on input
    meta: Metadata = Metadata()

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.rgb.shape[0], self.rgb.shape[1]


def decode(data: bytes, name: str) -> Image:
    """Decode image bytes; `name` is used in error messages."""
    if not data:
        raise GsasrError(f"{name}: empty file")
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header announcing an impossible size
        raise GsasrError(
            f"{name}: not a readable image (the decoder rejected it: "
            f"{str(exc).strip().splitlines()[-1][:120]})"
        ) from exc
    if raw is None or raw.size == 0:
        raise GsasrError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    meta = read_metadata(data)
    raw = apply_orientation(raw, meta.orientation)
    if raw.dtype == np.uint8:
        bits, scale = 8, 255.0
    elif raw.dtype == np.uint16:
        bits, scale = 16, 65535.0
    else:
        raise GsasrError(f"{name}: unsupported sample type {raw.dtype} (8- or 16-bit expected)")
    pixels = raw.astype(np.float32) / scale
    alpha = None
    if pixels.ndim == 2:
        grey, rgb = True, np.repeat(pixels[:, :, None], 3, axis=2)
    elif pixels.shape[2] == 1:
        grey, rgb = True, np.repeat(pixels, 3, axis=2)
    elif pixels.shape[2] in (3, 4):
        grey, rgb = False, pixels[:, :, 2::-1]  # BGR(A) -> RGB
        if pixels.shape[2] == 4:
            alpha = pixels[:, :, 3]
    else:
        raise GsasrError(f"{name}: unsupported channel count {pixels.shape[2]}")
    return Image(np.ascontiguousarray(rgb), alpha, bits, grey, meta)


def read_image(path: Path) -> Image:
    """Read an image file, raising GsasrError with a one-line reason on any failure."""
    if not path.exists():
        raise GsasrError(f"{path}: no such file")
    if path.is_dir():
        raise GsasrError(f"{path}: is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GsasrError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return decode(data, str(path))


def encode(image: Image, ext: str, quality: int = 95) -> bytes:
    """Encode `image` for the format of extension `ext` (".png", ".jpg", ...)."""
    cv_ext, deep, has_alpha = FORMATS[ext.lower()]
    pixels = quantise(image, 16 if image.bits == 16 and deep else 8, has_alpha)
    if cv_ext in (".webp", ".tif") and pixels.dtype == np.uint8 and has_metadata(image.meta):
        return encode_with_metadata(pixels, cv_ext, quality, image.meta)
    params: list[int] = []
    if cv_ext == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif cv_ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(cv_ext, pixels, params)
    if not ok:
        raise GsasrError(f"cannot encode the result as {ext}")
    return embed(buf.tobytes(), cv_ext, image.meta, pixels.shape[1], pixels.shape[0])


def quantise(image: Image, bits: int, with_alpha: bool, rows: int = 256) -> np.ndarray:
    """OpenCV's channel order (grey, BGR or BGRA) at `bits`, clamped and rounded.

    Converted a band of rows at a time, so that a large image needs no float copies
    beyond one band next to the integer result.
    """
    maxval = float((1 << bits) - 1)
    h, w = image.size
    alpha = image.alpha if with_alpha else None
    channels = (1 if image.grey else 3) + (0 if alpha is None else (3 if image.grey else 1))
    out = np.empty((h, w, channels), np.uint16 if bits == 16 else np.uint8)
    for r0 in range(0, h, rows):
        band = image.rgb[r0 : r0 + rows]
        colour = band.mean(axis=2, keepdims=True) if image.grey else band[:, :, ::-1]
        if alpha is not None:
            a = alpha[r0 : r0 + rows, :, None]
            # OpenCV stores grey + alpha as BGRA.
            colour = np.concatenate([np.repeat(colour, 3, axis=2) if image.grey else colour, a], 2)
        out[r0 : r0 + rows] = np.rint(np.clip(colour, 0.0, 1.0) * maxval)
    return out[:, :, 0] if channels == 1 else out


def check_writable(folder: Path, name: str) -> None:
    """Raise GsasrError unless a file can be created in `folder` (checked before any work)."""
    if not folder.exists():
        raise GsasrError(f"{name}: output folder {folder} does not exist")
    if not folder.is_dir():
        raise GsasrError(f"{name}: output folder {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".gsasr-probe-", dir=folder)
    except OSError as exc:
        raise GsasrError(f"{name}: cannot write to {folder} ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise GsasrError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise users
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise GsasrError(f"{path}: cannot write ({exc.strerror or exc})") from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
