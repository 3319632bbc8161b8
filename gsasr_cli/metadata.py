"""EXIF and ICC metadata: read from the input, orientation applied, copied to the output.

Pixels are decoded by OpenCV, which ignores EXIF orientation with IMREAD_UNCHANGED and
drops metadata on encode; Pillow parses and rewrites the EXIF block. The blocks are then
spliced into the encoded output: APP1/APP2 segments for JPEG, eXIf/iCCP chunks for PNG
(8 and 16 bits). 8-bit WebP and TIFF with metadata are encoded by Pillow, which writes
both blocks (TIFF without the EXIF camera sub-IFD); 16-bit TIFF (which Pillow cannot
write in colour) and BMP carry none.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
PIXEL_X, PIXEL_Y = 0xA002, 0xA003
_EXIF_HEADER = b"Exif\x00\x00"


@dataclass(frozen=True)
class Metadata:
    """What is carried from input to output."""

    orientation: int = 1
    exif: bytes | None = None  # TIFF-structured EXIF block, without the "Exif\0\0" header
    icc: bytes | None = None


def read_metadata(data: bytes) -> Metadata:
    """EXIF and ICC of an encoded image; empty when there is none or it cannot be parsed."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as im:
            icc = im.info.get("icc_profile") or None
            exif = im.getexif()
            orientation = int(exif.get(ORIENTATION, 1))
            raw = exif.tobytes() if len(exif) else None
    except Exception:  # metadata is best effort: a file Pillow cannot parse has none
        return Metadata()
    if raw is not None and raw.startswith(_EXIF_HEADER):
        raw = raw[len(_EXIF_HEADER) :]
    return Metadata(orientation if 1 <= orientation <= 8 else 1, raw, icc)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels [H, W, ...] upright according to the EXIF orientation tag."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(pixels)) if op else pixels


def updated_exif(exif: bytes, width: int, height: int) -> bytes:
    """The EXIF block for the output: orientation reset to 1, pixel dimensions updated."""
    from PIL import Image as PILImage

    tags = PILImage.Exif()
    tags.load(_EXIF_HEADER + exif)
    tags[ORIENTATION] = 1
    ifd = tags.get_ifd(EXIF_IFD)
    if PIXEL_X in ifd or PIXEL_Y in ifd:
        ifd[PIXEL_X], ifd[PIXEL_Y] = width, height
    raw = tags.tobytes()
    return raw[len(_EXIF_HEADER) :] if raw.startswith(_EXIF_HEADER) else raw


def embed(encoded: bytes, ext: str, meta: Metadata, width: int, height: int) -> bytes:
    """Splice EXIF and ICC into an encoded PNG or JPEG; other formats are returned as is."""
    exif = updated_exif(meta.exif, width, height) if meta.exif else None
    if not exif and not meta.icc:
        return encoded
    if ext in (".jpg", ".jpeg"):
        return _embed_jpeg(encoded, exif, meta.icc)
    if ext == ".png":
        return _embed_png(encoded, exif, meta.icc)
    return encoded


def has_metadata(meta: Metadata) -> bool:
    """Whether there is anything to copy."""
    return bool(meta.exif or meta.icc)


def encode_with_metadata(pixels: np.ndarray, ext: str, quality: int, meta: Metadata) -> bytes:
    """Encode 8-bit OpenCV-ordered pixels (grey, BGR, BGRA) as WebP or TIFF with EXIF/ICC."""
    from PIL import Image as PILImage

    if pixels.ndim == 3:
        order = [2, 1, 0, 3][: pixels.shape[2]]  # BGR(A) -> RGB(A)
        pixels = pixels[:, :, order]
    h, w = pixels.shape[:2]
    options: dict[str, object] = {}
    if meta.icc:
        options["icc_profile"] = meta.icc
    if ext == ".webp":
        fmt = "WEBP"
        options["quality"] = quality
        if meta.exif:
            options["exif"] = _EXIF_HEADER + updated_exif(meta.exif, w, h)
    else:
        fmt = "TIFF"
        options["compression"] = "tiff_lzw"
        if meta.exif:
            # TIFF takes the tags themselves; libtiff cannot place the camera sub-IFD
            # (0x8769) through Pillow, so the IFD0 tags (make, model, date...) are kept.
            tags = PILImage.Exif()
            tags.load(_EXIF_HEADER + updated_exif(meta.exif, w, h))
            tags.pop(EXIF_IFD, None)
            options["exif"] = tags
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels)).save(buf, fmt, **options)
    return buf.getvalue()


def _embed_jpeg(data: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    segments = []
    if exif:
        segments.append(_segment(0xE1, _EXIF_HEADER + exif))
    if icc:
        chunk = 65519  # 65535 - 2 (length) - 14 ("ICC_PROFILE\0" + index + count)
        parts = [icc[i : i + chunk] for i in range(0, len(icc), chunk)]
        for i, part in enumerate(parts, 1):
            segments.append(_segment(0xE2, b"ICC_PROFILE\x00" + bytes((i, len(parts))) + part))
    pos = 2  # after SOI; keep a JFIF APP0 first, as its spec requires
    if data[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:pos] + b"".join(segments) + data[pos:]


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        return b""  # too large for one segment: dropped rather than corrupting the file
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _embed_png(data: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    chunks = b""
    if icc:
        chunks += _chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        chunks += _chunk(b"eXIf", exif)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return data[:ihdr_end] + chunks + data[ihdr_end:]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
