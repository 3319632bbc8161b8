"""Reading and writing images: limits, formats, bit depths, grey and alpha, atomic writes.

Images are decoded from bytes (so any path, including non-ASCII ones, works and the
format is detected from the content) into float32 RGB in [0, 1] plus what is needed
to write the result back the way it came in: bit depth, grey or colour, alpha plane.

Before any pixel is decoded the headers are read (`probe_image`, `probe_bytes`) and an
image of more than `max_pixels` pixels is refused; reads stop at `max_bytes`. Problems
that do not stop a file (a multi-frame input, metadata that cannot be copied, a codec's
complaint about a damaged but decodable file, transparency flattened) are reported
through `on_warning(message)`: one line naming the file. Without a callback they are
issued as `GsasrWarning`s with Python's `warnings`. Codec output that would otherwise
reach stderr is captured and becomes those lines or the error message.
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import stat
import struct
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import GsasrError
from .files import (
    MAX_INPUT_BYTES,
    OutputExists,
    Terminated,
    capture_stderr,
    check_name,
    make_folder,
    read_file,
    read_stdin,
    reason,
    size_text,
    terminate_on_signals,
    write_atomic,
)
from .headers import MAX_INPUT_PIXELS, ImageInfo, png_without_animation
from .headers import probe_bytes as _probe_bytes
from .metadata import Metadata, apply_orientation, embed, encode_with_metadata, has_metadata

__all__ = [
    "FORMATS",
    "INPUT_SUFFIXES",
    "MAX_INPUT_BYTES",
    "MAX_INPUT_PIXELS",
    "WHITE",
    "GsasrWarning",
    "Image",
    "ImageInfo",
    "OutputExists",
    "Terminated",
    "check_name",
    "check_output_size",
    "check_writable",
    "make_folder",
    "decode",
    "encode",
    "parse_color",
    "probe_bytes",
    "probe_image",
    "read_file",
    "read_image",
    "read_stdin",
    "same_format",
    "terminate_on_signals",
    "write_atomic",
]

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
# The extensions a folder walk takes as images: the output formats', and GIF and PNM,
# which are read (recognised by their bytes) but written as PNG.
INPUT_SUFFIXES = frozenset(FORMATS) | {".gif", ".pbm", ".pgm", ".ppm", ".pnm"}
# What each output format can hold: the longest side, and the most bytes of samples.
# PNG: libpng refuses sides over 1,000,000 (its default user limit, for readers too).
# JPEG: libjpeg's JPEG_MAX_DIMENSION. WebP: 14-bit sizes. TIFF: a classic TIFF file is
# under 4 GiB and LZW can grow incompressible data by a third, so 3 GiB of samples.
# BMP: a 32-bit signed file size.
FORMAT_LIMITS: dict[str, tuple[int, int | None]] = {
    ".png": (1_000_000, None),
    ".jpg": (65_500, None),
    ".webp": (16_383, None),
    ".tif": ((1 << 32) - 1, 3 << 30),
    ".bmp": ((1 << 31) - 1, (1 << 31) - 1 - 1078),
}
_FORMAT_NAMES = {".png": "PNG", ".jpg": "JPEG", ".webp": "WebP", ".tif": "TIFF", ".bmp": "BMP"}

WHITE = (255, 255, 255)
_COLOURS = {"white": WHITE, "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}

Warn = Callable[[str], None]


class GsasrWarning(UserWarning):
    """A problem that did not stop a file; the message names the file."""


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


PixelLimit = int | None  # None: no limit


def _warner(on_warning: Warn | None) -> Warn:
    return on_warning if on_warning is not None else _warn


def _warn(message: str) -> None:
    """A GsasrWarning attributed to the first caller outside gsasr_cli (the line of the
    user's code that asked for the image), however deep the call was made."""
    level = 1
    frame: types.FrameType | None = sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("gsasr_cli"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, GsasrWarning, stacklevel=level)


# ------------------------------------------------------------------ reading


def probe_image(
    path: Path,
    *,
    max_pixels: int | None = MAX_INPUT_PIXELS,
    max_bytes: int = MAX_INPUT_BYTES,
    on_warning: Warn | None = None,
) -> ImageInfo:
    """Size, format, frames, transparency and metadata of an image file, from its headers
    only (the file is mapped, not read: only the pages the headers touch are loaded).

    Raises GsasrError as `read_image` would for the same file, without decoding it. A
    pipe cannot be read twice: probing one consumes it, so to check an input before
    decoding it, `read_file` (or `read_stdin`) once, then `probe_bytes` and `decode`.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        data = read_file(path, max_bytes=max_bytes)  # refusals, pipes, empty files
        return _probe_bytes(data, str(path), max_pixels=max_pixels, warn=_warner(on_warning))
    if st.st_size > max_bytes:
        read_file(path, max_bytes=max_bytes)  # raises the size refusal
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _probe_bytes(m, str(path), max_pixels=max_pixels, warn=_warner(on_warning))
    except OSError as exc:
        raise GsasrError(f"{path}: cannot read ({reason(exc)})") from exc


def probe_bytes(
    data: bytes,
    name: str,
    max_pixels: PixelLimit = MAX_INPUT_PIXELS,
    on_warning: Warn | None = None,
) -> ImageInfo:
    """`probe_image` for bytes already in memory (standard input): headers only."""
    return _probe_bytes(data, name, max_pixels=max_pixels, warn=_warner(on_warning))


def read_image(
    path: Path,
    *,
    max_bytes: int = MAX_INPUT_BYTES,
    max_pixels: int | None = MAX_INPUT_PIXELS,
    on_warning: Warn | None = None,
) -> Image:
    """Read an image file, raising GsasrError with a one-line reason on any failure.

    Regular files and pipes are read (at most `max_bytes`); folders, devices and sockets
    are refused, as is an image of more than `max_pixels` pixels, before decoding.
    """
    data = read_file(Path(path), max_bytes=max_bytes)
    return decode(data, str(path), max_pixels=max_pixels, on_warning=on_warning)


def decode(
    data: bytes,
    name: str,
    *,
    max_pixels: int | None = MAX_INPUT_PIXELS,
    on_warning: Warn | None = None,
) -> Image:
    """Decode image bytes; `name` is used in error messages and warnings."""
    pending: list[str] = []  # shown only if the file decodes: an error says it all
    info = _probe_bytes(data, name, max_pixels=max_pixels, warn=pending.append)
    note = info.frames_note(name)
    if note:
        pending.append(note)
    if info.still_apart:  # OpenCV's imdecode would give the first animation frame
        data = png_without_animation(data)
    raw = _imdecode(data, name, pending.append)
    if max_pixels is not None and raw.shape[0] * raw.shape[1] > max_pixels:  # header lied
        raise GsasrError(f"{name}: decodes to more pixels than its header says; refused")
    if not (info.format == "TIFF" and _codec_turns_tiff_upright()):
        raw = apply_orientation(raw, info.meta.orientation)
    if raw.dtype not in (np.uint8, np.uint16):
        raise GsasrError(f"{name}: unsupported sample type {raw.dtype} (8- or 16-bit expected)")
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels not in (1, 3, 4):
        raise GsasrError(f"{name}: unsupported channel count {channels}")
    # Alpha only when the file stores transparency: a GIF without a transparent colour,
    # a 32-bit BMP's padding or a TIFF's unspecified extra sample is no alpha channel.
    # A PNG, TIFF or WebP that stores alpha keeps it, even when every pixel is opaque.
    keep_alpha = channels == 4 and info.alpha is not False
    grey = channels == 1 or (info.grey and channels == 4)
    image = _to_float(raw, grey, keep_alpha, info.meta)
    warn = _warner(on_warning)
    for message in dict.fromkeys(pending):
        warn(message)
    return image


@functools.cache
def _codec_turns_tiff_upright() -> bool:
    """Whether OpenCV's TIFF reader applies the Orientation tag itself (OpenCV 5 does,
    even with IMREAD_UNCHANGED, which leaves other formats' EXIF orientation to us).
    Decided once, on a 2x1 grey TIFF whose tag says "mirrored"."""
    entries = [  # (tag, type: 3 SHORT / 4 LONG, value), one value each, in tag order
        (256, 3, 2), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1),
        (273, 4, 8 + 2 + 10 * 12 + 4), (274, 3, 2), (277, 3, 1), (278, 3, 1), (279, 4, 2),
    ]  # fmt: skip
    ifd = b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 10) + ifd + bytes(4) + b"\x00\xff"
    try:
        raw = cv2.imdecode(np.frombuffer(tiff, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return False
    return raw is not None and raw.reshape(-1)[:2].tolist() == [255, 0]


def _imdecode(data: bytes, name: str, warn: Warn) -> np.ndarray:
    notes: list[str] = []
    raw = None
    try:
        with capture_stderr(notes):
            raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header announcing an impossible size
        notes.append(str(exc))
    if raw is None or raw.size == 0:
        why = _codec_reason(notes) or "corrupt, truncated or unsupported format"
        raise GsasrError(f"{name}: not a readable image ({why})")
    notes = [n for n in notes if not _BENIGN.search(n)]
    if notes:
        warn(f"{name}: {_codec_reason(notes, all_lines=True)}")
    return raw


# libtiff's remarks on files that decode correctly: private tags it does not know (most
# camera TIFFs), and extra samples not declared (OpenCV's own RGBA TIFFs).
_BENIGN = re.compile(r"Unknown field with tag|Defining non-color channels as ExtraSamples")
_OPENCV_PREFIX = re.compile(r"^\[\s*[A-Z]+:[^\]]*\]\s*(global\s+)?\S+:\d+\s+\S+\s+")
_OPENCV_ERROR = re.compile(r"OpenCV\([^)]*\)\s+\S+:\d+:\s*error:\s*(\([^)]*\)\s*)?")


def _codec_reason(notes: list[str], all_lines: bool = False) -> str:
    """Codec messages as one short line: OpenCV's log prefixes and source paths removed,
    repeats dropped."""
    lines: list[str] = []
    for note in notes:
        for line in note.splitlines():
            line = _OPENCV_ERROR.sub("", _OPENCV_PREFIX.sub("", line.strip())).strip()
            line = re.sub(r"\s+in function '[^']*'$", "", line)
            line = re.sub(r"^imdecode_\('[^']*'\):\s*", "", line)
            if line and line not in lines:
                lines.append(line)
    if not lines:
        return ""
    shown = lines if all_lines else lines[-1:]
    text = "; ".join(shown[:3]) + (f" (and {len(shown) - 3} more)" if len(shown) > 3 else "")
    return text[:300]


def _to_float(raw: np.ndarray, grey: bool, keep_alpha: bool, meta: Metadata) -> Image:
    """Float32 RGB (and alpha) from OpenCV's grey/BGR/BGRA samples, a band of rows at a
    time, so that no float copy of the whole raw image is made."""
    bits, maxval = (8, 255.0) if raw.dtype == np.uint8 else (16, 65535.0)
    h, w = raw.shape[:2]
    rgb = np.empty((h, w, 3), np.float32)
    alpha = np.empty((h, w), np.float32) if keep_alpha else None
    for r0 in range(0, h, 256):
        band = raw[r0 : r0 + 256]
        if band.ndim == 2:
            rgb[r0 : r0 + 256] = band[:, :, None] / np.float32(maxval)
        elif grey:
            rgb[r0 : r0 + 256] = band[:, :, :1] / np.float32(maxval)
        else:
            rgb[r0 : r0 + 256] = band[:, :, 2::-1] / np.float32(maxval)  # BGR(A) -> RGB
        if alpha is not None:
            alpha[r0 : r0 + 256] = band[:, :, 3] / np.float32(maxval)
    return Image(rgb, alpha, bits, grey, meta)


# ------------------------------------------------------------------ writing


def check_output_size(
    ext: str, height: int, width: int, *, name: str = "output", channels: int = 3, bits: int = 8
) -> None:
    """Raise GsasrError if format `ext` cannot hold a `width` x `height` image whose source
    has `channels` samples a pixel (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA; ImageInfo's
    `channels`) of `bits` bits: checked when planning, before any work."""
    cv_ext, deep, has_alpha = FORMATS[ext.lower()]
    side, limit = FORMAT_LIMITS[cv_ext]
    fmt = _FORMAT_NAMES[cv_ext]
    if max(height, width) > side:
        raise GsasrError(
            f"{name}: {width}x{height} is larger than {fmt} allows ({side} pixels a side at most)"
        )
    if limit is None:
        return
    alpha = channels in (2, 4) and has_alpha
    # As `encode` writes it: grey + alpha as BGRA (OpenCV has no grey + alpha), 16 bits
    # only where the format holds them.
    samples = 4 if alpha else (1 if channels <= 2 else 3)
    row = width * samples * (2 if bits == 16 and deep else 1)
    total = height * ((row + 3) & ~3 if cv_ext == ".bmp" else row)
    if total > limit:
        raise GsasrError(
            f"{name}: {width}x{height} needs {size_text(total)}, more than a {fmt} "
            f"file holds ({size_text(limit)})"
        )


def same_format(a: str, b: str) -> bool:
    """Whether two extensions (".jpg", "jpeg", ".TIF") name the same output format;
    False when either is not a supported format."""
    a, b = "." + a.lower().lstrip("."), "." + b.lower().lstrip(".")
    return a in FORMATS and b in FORMATS and FORMATS[a][0] == FORMATS[b][0]


def parse_color(text: str) -> tuple[int, int, int]:
    """An 8-bit RGB colour from "white", "black", "grey", "#rgb", "#rrggbb" or "r,g,b";
    ValueError otherwise."""
    t = text.strip().lower()
    if t in _COLOURS:
        return _COLOURS[t]
    hexa = t[1:] if t.startswith("#") else t
    if re.fullmatch(r"[0-9a-f]{3}|[0-9a-f]{6}", hexa) and (t.startswith("#") or len(hexa) == 6):
        if len(hexa) == 3:
            hexa = "".join(c * 2 for c in hexa)
        return int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16)
    parts = t.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        r, g, b = (int(p) for p in parts)
        return r, g, b
    raise ValueError(f"{text!r} is not a colour (white, black, #rrggbb or r,g,b)")


def encode(
    image: Image,
    ext: str,
    quality: int = 95,
    *,
    background: tuple[int, int, int] = WHITE,
    name: str = "output",
    on_warning: Warn | None = None,
) -> bytes:
    """Encode `image` for the format of extension `ext` (".png", ".jpg", ...).

    Transparency written to a format without alpha (JPEG, BMP) is flattened onto
    `background` (8-bit RGB, white by default, as image editors and web pages show
    transparency), with a warning when any pixel was not opaque. Metadata that cannot be
    written is dropped with a warning. `name` (the output) is used in messages.
    """
    warn = _warner(on_warning)
    cv_ext, deep, has_alpha = FORMATS[ext.lower()]
    h, w = image.size
    bits = 16 if image.bits == 16 and deep else 8
    channels = (1 if image.grey else 3) + (0 if image.alpha is None else 1)
    check_output_size(ext, h, w, name=name, channels=channels, bits=bits)
    flatten = image.alpha is not None and not has_alpha
    if flatten and image.alpha is not None and float(image.alpha.min()) < 1.0:
        colour = next((k for k, v in _COLOURS.items() if v == tuple(background)), None)
        colour = colour or "#{:02x}{:02x}{:02x}".format(*background)
        warn(f"{name}: transparency flattened onto {colour} ({_FORMAT_NAMES[cv_ext]} has no alpha)")
    pixels = quantise(image, bits, has_alpha, background=background if flatten else None)
    if cv_ext in (".webp", ".tif") and pixels.dtype == np.uint8 and has_metadata(image.meta):
        try:
            return encode_with_metadata(pixels, cv_ext, quality, image.meta, name=name, warn=warn)
        except ValueError as exc:
            raise GsasrError(f"{name}: cannot encode as {ext} ({exc})") from exc
    params: list[int] = []
    if cv_ext == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif cv_ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    notes: list[str] = []
    ok, buf = False, None
    try:
        with capture_stderr(notes):
            ok, buf = cv2.imencode(cv_ext, pixels, params)
    except cv2.error as exc:
        notes.append(str(exc))
    if not ok or buf is None:
        why = _codec_reason(notes) or "the encoder failed"
        raise GsasrError(f"{name}: cannot encode as {ext} ({why})")
    if notes:
        warn(f"{name}: {_codec_reason(notes, all_lines=True)}")
    return embed(buf.tobytes(), cv_ext, image.meta, (h, w), name, warn)


def quantise(
    image: Image,
    bits: int,
    with_alpha: bool,
    rows: int = 256,
    *,
    background: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """OpenCV's channel order (grey, BGR or BGRA) at `bits`, clamped and rounded.

    Without `with_alpha`, an alpha plane is composited onto `background` (8-bit RGB)
    when one is given, and dropped otherwise. NaN becomes 0. Converted a band of rows at
    a time, so that a large image needs no float copies beyond one band.
    """
    maxval = float((1 << bits) - 1)
    h, w = image.size
    alpha = image.alpha if with_alpha else None
    under = image.alpha if (not with_alpha and background is not None) else None
    bg = None if under is None else np.asarray(background, np.float32) / 255.0
    channels = (1 if image.grey else 3) + (0 if alpha is None else (3 if image.grey else 1))
    out = np.empty((h, w, channels), np.uint16 if bits == 16 else np.uint8)
    for r0 in range(0, h, rows):
        band = np.nan_to_num(image.rgb[r0 : r0 + rows], nan=0.0, posinf=1.0, neginf=0.0)
        if under is not None:
            a = np.clip(np.nan_to_num(under[r0 : r0 + rows, :, None]), 0.0, 1.0)
            band = np.clip(band, 0.0, 1.0) * a + bg * (1.0 - a)
        colour = band.mean(axis=2, keepdims=True) if image.grey else band[:, :, ::-1]
        if alpha is not None:
            a = np.nan_to_num(alpha[r0 : r0 + rows, :, None])
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
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GsasrError(f"{name}: cannot write to {folder} (permission denied or read-only)")
