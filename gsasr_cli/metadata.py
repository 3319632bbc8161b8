"""EXIF and ICC metadata: read from the input, orientation applied, copied to the output.

Pixels are decoded by OpenCV, which ignores EXIF orientation with IMREAD_UNCHANGED (but
for TIFF, whose Orientation tag its reader applies: `imageio._codec_turns_tiff_upright`) and
drops metadata on encode; Pillow parses and rewrites the EXIF block. The blocks are then
spliced into the encoded output: APP1/APP2 segments for JPEG, eXIf/iCCP chunks for PNG
(8 and 16 bits). 8-bit WebP and TIFF with metadata are encoded by Pillow, which writes
both blocks (TIFF keeps the IFD0 tags only: libtiff cannot place the EXIF and GPS
sub-IFDs through Pillow); 16-bit TIFF (which Pillow cannot write in colour) and BMP
carry none.

Only descriptive tags are copied (`IFD0_TAGS`): a TIFF's own layout tags (ImageWidth,
StripOffsets, BitsPerSample...) describe the input file, not the output, and written
into a TIFF they override the real ones. Metadata is best effort: a tag that cannot be
written is dropped with a warning (through the `warn` callback), never failing the file.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .files import capture_stderr

ORIENTATION = 0x0112
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
PIXEL_X, PIXEL_Y = 0xA002, 0xA003
_EXIF_HEADER = b"Exif\x00\x00"

# IFD0 tags that describe the picture rather than the file's layout: those of EXIF 2.3's
# table for the primary image less the layout ones, plus Windows' XP tags, Rating and
# PrintIM. Everything else in IFD0 (sizes, strips, tiles, samples, compression,
# colour maps, sub-IFDs, GeoTIFF...) is left out.
IFD0_TAGS = frozenset(
    {
        0x010E,  # ImageDescription
        0x010F,  # Make
        0x0110,  # Model
        ORIENTATION,
        0x011A,  # XResolution
        0x011B,  # YResolution
        0x0128,  # ResolutionUnit
        0x0131,  # Software
        0x0132,  # DateTime
        0x013B,  # Artist
        0x013C,  # HostComputer
        0x0213,  # YCbCrPositioning (EXIF requires it in JPEG files)
        0x4746,  # Rating
        0x4749,  # RatingPercent
        0x8298,  # Copyright
        *range(0x9C9B, 0x9CA0),  # XPTitle, XPComment, XPAuthor, XPKeywords, XPSubject
        0xC4A5,  # PrintIM
        EXIF_IFD,
        GPS_IFD,
    }
)


# What libtiff accepts among them when Pillow writes a TIFF: the tag and a test of its value.
def _text(v: Any) -> bool:
    return isinstance(v, str)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) or hasattr(v, "limit_rational")  # IFDRational


_TIFF_TAGS: dict[int, Callable[[Any], bool]] = {
    0x010E: _text, 0x010F: _text, 0x0110: _text, 0x0131: _text, 0x0132: _text,
    0x013B: _text, 0x013C: _text, 0x8298: _text,
    ORIENTATION: lambda v: v in range(1, 9),
    0x011A: _number, 0x011B: _number,
    0x0128: lambda v: v in (1, 2, 3),
}  # fmt: skip
_LIBTIFF_PREFIX = re.compile(r"^_?TIFF\w*:[\s:]*")

Warn = Callable[[str], None]
Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class Metadata:
    """What is carried from input to output."""

    orientation: int = 1
    exif: bytes | None = None  # TIFF-structured EXIF block, without the "Exif\0\0" header
    icc: bytes | None = None


def read_metadata(data: bytes) -> Metadata:
    """EXIF and ICC of an encoded image, from its headers (empty when there is none).

    Kept for callers of the old API; `imageio.probe_bytes` gives this and more.
    """
    from .headers import probe_bytes

    return probe_bytes(data, "image", max_pixels=None, warn=lambda _: None).meta


def metadata_from(exif: Any, icc: bytes | None, name: str, warn: Warn) -> Metadata:
    """Metadata from a Pillow `Image.Exif` (or None) and an ICC profile: orientation read,
    layout tags removed, malformed tags dropped with a warning."""
    orientation, raw = 1, None
    if exif is not None and len(exif):
        try:
            value = int(exif.get(ORIENTATION, 1))
            orientation = value if 1 <= value <= 8 else 1
        except (TypeError, ValueError):
            pass
        raw = _clean_exif(exif, name, warn)
    return Metadata(orientation, raw, bytes(icc) if icc else None)


def metadata_from_raw(raw: bytes | None, icc: bytes | None, name: str, warn: Warn) -> Metadata:
    """Metadata from a raw EXIF block (with or without the "Exif\\0\\0" header)."""
    exif = None
    if raw:
        from PIL import Image as PILImage

        raw = bytes(raw)
        exif = PILImage.Exif()
        try:
            with _pillow_warnings(name, warn):
                exif.load(raw if raw.startswith(_EXIF_HEADER) else _EXIF_HEADER + raw)
        except Exception as exc:  # noqa: BLE001 - any parse failure: the EXIF is unusable
            warn(f"{name}: EXIF unreadable, not copied ({_why(exc)})")
            exif = None
    return metadata_from(exif, icc, name, warn)


def _clean_exif(exif: Any, name: str, warn: Warn) -> bytes | None:
    """The EXIF block to carry: descriptive tags only, each one known to serialise."""
    from PIL import Image as PILImage

    dropped: list[Any] = []  # tags, or (sub-IFD, tag) pairs
    with _pillow_warnings(name, warn):
        for tag in list(exif.keys()):
            if tag not in IFD0_TAGS:
                del exif[tag]
        for tag in (EXIF_IFD, GPS_IFD):
            if tag not in exif:
                continue
            try:
                sub = exif.get_ifd(tag)
                if (
                    tag == EXIF_IFD
                    and INTEROP_IFD in sub
                    and not isinstance(sub[INTEROP_IFD], dict)
                ):
                    sub[INTEROP_IFD] = dict(exif.get_ifd(INTEROP_IFD))
            except Exception:  # noqa: BLE001 - a broken pointer: the sub-IFD is lost
                sub = None
            del exif[tag]
            if sub is None:
                dropped.append(tag)
                continue
            good = {t: v for t, v in sub.items() if _serialises({tag: {t: v}})}
            dropped += [(tag, t) for t in sub if t not in good]
            if good:
                exif[tag] = good
        for tag in [t for t in exif if t not in (EXIF_IFD, GPS_IFD)]:
            if not _serialises({tag: exif[tag]}):
                del exif[tag]
                dropped.append(tag)
        if dropped:
            warn(f"{name}: {_tag_list(dropped)} malformed in the EXIF, not copied")
        if not len(exif):
            return None
        out = PILImage.Exif()
        for tag, value in exif.items():
            out[tag] = value
        try:
            raw = out.tobytes()
        except Exception as exc:  # noqa: BLE001
            warn(f"{name}: EXIF not copied ({_why(exc)})")
            return None
    return raw[len(_EXIF_HEADER) :] if raw.startswith(_EXIF_HEADER) else raw


def _serialises(tags: dict[int, Any]) -> bool:
    from PIL import Image as PILImage

    probe = PILImage.Exif()
    try:
        for tag, value in tags.items():
            probe[tag] = value
        probe.tobytes()
    except Exception:  # noqa: BLE001 - whatever Pillow cannot write is dropped
        return False
    return True


def _tag_list(tags: list) -> str:
    """Names of EXIF tags: IFD0 and Exif sub-IFD tags as numbers, GPS ones as (GPS_IFD, n)."""
    from PIL import ExifTags

    def label(tag) -> str:
        if isinstance(tag, tuple):
            ifd, tag = tag
            if ifd == GPS_IFD:
                return ExifTags.GPSTAGS.get(tag, f"GPS tag {tag}")
        return ExifTags.TAGS.get(tag, f"tag 0x{tag:04x}")

    shown = [label(t) for t in tags[:4]]
    more = f" and {len(tags) - 4} more" if len(tags) > 4 else ""
    return ", ".join(shown) + more


class _pillow_warnings:
    """Turn Pillow's Python warnings (corrupt EXIF...) into `warn` lines naming the file."""

    def __init__(self, name: str, warn: Warn) -> None:
        self.name, self.warn = name, warn
        self._ctx = warnings.catch_warnings(record=True)

    def __enter__(self) -> None:
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
        seen = set()
        for w in self._caught:
            text = " ".join(str(w.message).split())
            if text not in seen:
                seen.add(text)
                self.warn(f"{self.name}: {text}")


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


def _output_exif(meta: Metadata, width: int, height: int, name: str, warn: Warn) -> bytes | None:
    if not meta.exif:
        return None
    try:
        with _pillow_warnings(name, warn):
            return updated_exif(meta.exif, width, height)
    except Exception as exc:  # noqa: BLE001 - best effort: the picture matters, not the tags
        warn(f"{name}: EXIF not copied ({_why(exc)})")
        return None


def embed(encoded: bytes, ext: str, meta: Metadata, size: Size, name: str, warn: Warn) -> bytes:
    """Splice EXIF and ICC into an encoded PNG or JPEG of `size` (height, width) pixels;
    other formats are returned as is. `name` (the output) is used in warnings."""
    if ext not in (".jpg", ".jpeg", ".png") or not has_metadata(meta):
        return encoded
    exif = _output_exif(meta, size[1], size[0], name, warn)
    if not exif and not meta.icc:
        return encoded
    if ext == ".png":
        return _embed_png(encoded, exif, meta.icc)
    if exif and len(_EXIF_HEADER + exif) + 2 > 0xFFFF:
        warn(f"{name}: EXIF larger than a JPEG segment (64 KiB), not copied")
        exif = None
    return _embed_jpeg(encoded, exif, meta.icc)


def has_metadata(meta: Metadata) -> bool:
    """Whether there is anything to copy."""
    return bool(meta.exif or meta.icc)


def encode_with_metadata(
    pixels: np.ndarray,
    ext: str,
    quality: int,
    meta: Metadata,
    *,
    name: str = "output",
    warn: Warn = lambda _: None,
) -> bytes:
    """Encode 8-bit OpenCV-ordered pixels (grey, BGR, BGRA) as WebP or TIFF with EXIF/ICC.

    What the encoder rejects is dropped, in steps (the tags libtiff cannot take, then
    all EXIF, then the ICC profile), each with a warning.
    """
    from PIL import Image as PILImage

    if pixels.ndim == 3:
        order = [2, 1, 0, 3][: pixels.shape[2]]  # BGR(A) -> RGB(A)
        pixels = pixels[:, :, order]
    h, w = pixels.shape[:2]
    image = PILImage.fromarray(np.ascontiguousarray(pixels))
    exif = _output_exif(meta, w, h, name, warn)
    icc: dict[str, Any] = {"icc_profile": meta.icc} if meta.icc else {}
    if ext == ".webp":
        fmt, base = "WEBP", dict[str, Any](quality=quality)
        steps = [("", {**icc, "exif": _EXIF_HEADER + exif} if exif else icc)]
    else:
        fmt, base = "TIFF", {"compression": "tiff_lzw"}
        steps = [(what, {**icc, **tags}) for what, tags in _tiff_exif_steps(exif)]
    if exif:
        steps.append(("EXIF", icc))
    if icc:
        steps.append(("ICC profile", {}))
    last = ""
    for dropped, options in steps:
        if dropped:
            warn(f"{name}: {dropped} not copied ({last})")
        notes: list[str] = []
        buf = io.BytesIO()
        try:
            with capture_stderr(notes), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image.save(buf, fmt, **base, **options)
            for note in dict.fromkeys(notes):  # e.g. libtiff skipping a tag it refuses
                warn(f"{name}: {_LIBTIFF_PREFIX.sub('', note)}")
            return buf.getvalue()
        except Exception as exc:  # noqa: BLE001 - retried with less metadata
            last = _LIBTIFF_PREFIX.sub("", notes[-1]) if notes else _why(exc)
    raise ValueError(last)


def _tiff_exif_steps(exif: bytes | None) -> list[tuple[str, dict[str, object]]]:
    """EXIF options for a TIFF: all IFD0 tags, then only those libtiff is known to take."""
    from PIL import Image as PILImage

    if not exif:
        return [("", {})]
    tags = PILImage.Exif()
    tags.load(_EXIF_HEADER + exif)
    for sub in (EXIF_IFD, GPS_IFD):  # libtiff cannot place sub-IFDs through Pillow
        tags.pop(sub, None)
    safe, dropped = PILImage.Exif(), list[int]()
    for tag, value in tags.items():
        valid = _TIFF_TAGS.get(tag)
        if valid is not None and valid(value):
            safe[tag] = value
        else:
            dropped.append(tag)
    steps: list[tuple[str, dict[str, object]]] = [("", {"exif": tags})]
    if dropped:
        steps.append((f"EXIF {_tag_list(dropped)}", {"exif": safe}))
    return steps


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _embed_jpeg(data: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    segments = []
    if exif:
        segments.append(_segment(0xE1, _EXIF_HEADER + exif))
    if icc:
        chunk = 65519  # 65535 - 2 (length) - 14 ("ICC_PROFILE\0" + index + count)
        parts = [icc[i : i + chunk] for i in range(0, len(icc), chunk)]
        if len(parts) <= 255:  # the sequence number is one byte
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
