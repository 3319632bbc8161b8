"""What an image file holds, read from its headers alone: size, format, frames,
transparency, EXIF and ICC.

This runs before any pixel is decoded, so that a small file announcing a huge image (a
"decompression bomb": a 1 KB RLE BMP of 30000x30000, a PNG of zeros compressed 1000:1)
is refused for the price of a few header bytes, and so that a dry run can size every
input without decoding one. The sizes come from our own parsers of each format's header
(a few dozen bytes each); Pillow, opened lazily through its format plugins, supplies
the frame count, the transparency and the metadata of JPEG, TIFF, BMP, GIF and PNM
files. PNG and WebP are read entirely here: Pillow decodes a whole PNG to look for EXIF
after the pixels, and allocates a WebP's canvas when it opens one.
"""

from __future__ import annotations

import io
import mmap
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import GsasrError
from .metadata import Metadata, metadata_from, metadata_from_raw

# The largest input decoded by default: 2^27 pixels (134 MP, e.g. 16384 x 8192). That
# covers the sensors of every current camera but a few 150 MP medium-format backs, and
# decoding it takes about 2.7 GB (20 bytes a pixel: the 8-bit samples, float32 RGB and
# alpha), the same order as Pillow's own bomb threshold (179 MP). gsasr only enlarges,
# so the output, and the memory, are larger still.
MAX_INPUT_PIXELS = 1 << 27

# OpenCV's decoders refuse longer sides (CV_IO_MAX_IMAGE_WIDTH and _HEIGHT); a strip of
# 10 x 10 million pixels is within the pixel limit but no image we can decode.
MAX_SIDE = 1 << 20

FORMAT_NAMES = "PNG, JPEG, WebP, TIFF, BMP, GIF or PNM"
Warn = Callable[[str], None]


@dataclass(frozen=True)
class ImageInfo:
    """An image file as its headers describe it."""

    width: int  # upright: after the EXIF orientation
    height: int
    format: str  # "PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF" or "PNM"
    frames: int = 1  # animation frames, pages or pictures; only the first is decoded
    alpha: bool | None = None  # the file stores transparency (None: cannot tell)
    grey: bool = False  # stored as grey levels
    bits: int = 8  # bits per sample of the decoded image (8 or 16)
    meta: Metadata = Metadata()
    # A PNG whose still image (IDAT) is not one of its animation frames: the picture that
    # viewers without animation show, which is then the one decoded (as by libpng).
    still_apart: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def channels(self) -> int:
        """Samples per pixel an output in this layout needs."""
        return (1 if self.grey else 3) + (1 if self.alpha else 0)

    @property
    def animated(self) -> bool:
        return self.frames > 1 and self.format in ("GIF", "PNG", "WEBP")

    def frames_note(self, name: str) -> str | None:
        """The warning to show for a file of several frames, pages or pictures."""
        if self.still_apart:
            count = f"{self.frames} frame{'s' if self.frames > 1 else ''}"
            return f"{name}: animated, {count}; its still image (not a frame) is upscaled"
        if self.frames <= 1:
            return None
        if self.animated:
            what = f"animated, {self.frames} frames"
        elif self.format == "TIFF":
            what = f"{self.frames} pages"
        else:
            what = f"{self.frames} pictures"
        return f"{name}: {what}; only the first is upscaled"


class _Bad(Exception):
    """A header that cannot be parsed (turned into a GsasrError naming the file)."""


def sniff(head: bytes) -> str | None:
    """The format of an image from its first bytes, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "PNM"
    return None


def probe_bytes(
    data: bytes | mmap.mmap,
    name: str,
    *,
    max_pixels: int | None = MAX_INPUT_PIXELS,
    warn: Warn,
) -> ImageInfo:
    """Parse the headers of an encoded image; raise GsasrError for an unknown format,
    a broken header, or more than `max_pixels` pixels (None: no limit)."""
    buf = data
    if not len(buf):
        raise GsasrError(f"{name}: empty file")
    fmt = sniff(bytes(buf[:16]))
    if fmt is None:
        raise GsasrError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    try:
        info = _PARSERS[fmt](buf, name, warn)
    except _Bad as exc:
        raise GsasrError(f"{name}: not a readable image (broken {fmt} header: {exc})") from None
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - struct and index errors of a cut header, and the like
        raise GsasrError(f"{name}: not a readable image (truncated {fmt} header)") from None
    if info.width <= 0 or info.height <= 0:
        raise GsasrError(
            f"{name}: not a readable image ({fmt} header says {info.width}x{info.height})"
        )
    if max(info.width, info.height) > MAX_SIDE:
        raise GsasrError(
            f"{name}: {info.width}x{info.height} is longer than the decoder allows "
            f"({MAX_SIDE} pixels a side)"
        )
    if max_pixels is not None and info.pixels > max_pixels:
        raise GsasrError(
            f"{name}: {info.width}x{info.height} is {_count(info.pixels)}, over the input "
            f"limit of {_count(max_pixels)}"
        )
    return info


def _count(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} megapixels" if pixels >= 10**6 else f"{pixels} pixels"


def _u16(b, o, big=False):
    return struct.unpack_from(">H" if big else "<H", b, o)[0]


def _u32(b, o, big=False):
    return struct.unpack_from(">I" if big else "<I", b, o)[0]


def _upright(w: int, h: int, meta: Metadata) -> tuple[int, int]:
    return (h, w) if meta.orientation in (5, 6, 7, 8) else (w, h)


# ------------------------------------------------------------------ PNG


def _png(b, name: str, warn: Warn) -> ImageInfo:
    if bytes(b[12:16]) != b"IHDR":
        raise _Bad("IHDR is not the first chunk")
    w, h = _u32(b, 16, True), _u32(b, 20, True)
    depth, ctype = b[24], b[25]
    alpha, frames, icc, exif = ctype in (4, 6), 1, None, None
    animation = frame_first = seen_idat = False  # frame_first: an fcTL before the IDAT
    for pos, kind, length in _png_chunks(b):
        body = b[pos + 8 : pos + 8 + length]
        if kind == b"tRNS":
            alpha = True
        elif kind == b"acTL" and length >= 8:
            animation, frames = True, max(1, _u32(body, 0, True))
        elif kind == b"fcTL" and not seen_idat:
            frame_first = True
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"iCCP" and icc is None:
            icc = _iccp(bytes(body), name, warn)
        elif kind == b"eXIf":
            exif = bytes(body)
        elif kind in (b"tEXt", b"zTXt") and exif is None:
            exif = _raw_profile_exif(kind, bytes(body))
        elif kind == b"IEND":
            break
    meta = metadata_from_raw(exif, icc, name, warn)
    w, h = _upright(w, h, meta)
    bits = 16 if depth == 16 else 8
    apart = animation and not frame_first
    return ImageInfo(w, h, "PNG", frames, alpha, ctype in (0, 4), bits, meta, still_apart=apart)


def png_without_animation(data: bytes) -> bytes:
    """A PNG's bytes without its acTL chunk: decoders then read the still image (IDAT)
    instead of the first animation frame (fcTL and fdAT are ancillary: skipped)."""
    b = memoryview(data)
    for pos, kind, length in _png_chunks(b):
        if kind == b"acTL":
            return bytes(b[:pos]) + bytes(b[pos + 12 + length :])
    return data


def _png_chunks(b) -> Iterator[tuple[int, bytes, int]]:
    """Each chunk of a PNG after its signature: (offset, type, data length)."""
    pos = 8
    while pos + 8 <= len(b):
        length = _u32(b, pos, True)
        yield pos, bytes(b[pos + 4 : pos + 8]), length
        pos += 12 + length


def _raw_profile_exif(kind: bytes, body: bytes, limit: int = 1 << 20) -> bytes | None:
    """EXIF as ImageMagick stored it before PNG had eXIf: hex in a text chunk named
    "Raw profile type exif"."""
    key, _, text = body.partition(b"\x00")
    if key != b"Raw profile type exif":
        return None
    if kind == b"zTXt":
        inflate = zlib.decompressobj()
        try:
            text = inflate.decompress(text[1:], limit)  # after the compression method
        except zlib.error:
            return None
    try:
        return bytes.fromhex("".join(text.decode("latin-1").split("\n")[3:])) or None
    except ValueError:
        return None


def _iccp(body: bytes, name: str, warn: Warn, limit: int = 1 << 24) -> bytes | None:
    """The ICC profile of an iCCP chunk, inflated to at most `limit` bytes."""
    sep = body.find(b"\x00")
    if sep < 0 or sep + 2 > len(body):
        return None
    inflate = zlib.decompressobj()
    try:
        profile = inflate.decompress(body[sep + 2 :], limit)
    except zlib.error:
        warn(f"{name}: ICC profile unreadable, not copied")
        return None
    if inflate.unconsumed_tail:
        warn(f"{name}: ICC profile over 16 MiB, not copied")
        return None
    return profile or None


# ------------------------------------------------------------------ WebP


def _webp(b, name: str, warn: Warn) -> ImageInfo:
    pos, end = 12, min(len(b), 8 + _u32(b, 4))
    w = h = 0
    alpha, frames, icc, exif = False, 0, None, None
    first = True
    while pos + 8 <= end:
        kind, size = bytes(b[pos : pos + 4]), _u32(b, pos + 4)
        body = b[pos + 8 : pos + 8 + size]
        if first:
            if kind == b"VP8X":
                alpha = bool(body[0] & 0x10)
                w = 1 + (body[4] | body[5] << 8 | body[6] << 16)
                h = 1 + (body[7] | body[8] << 8 | body[9] << 16)
            elif kind == b"VP8L":
                if body[0] != 0x2F:
                    raise _Bad("no VP8L signature")
                bits = _u32(body, 1)
                w, h, alpha = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
            elif kind == b"VP8 ":
                if bytes(body[3:6]) != b"\x9d\x01\x2a":
                    raise _Bad("no VP8 start code")
                w, h = _u16(body, 6) & 0x3FFF, _u16(body, 8) & 0x3FFF
            else:
                raise _Bad(f"first chunk {kind!r}")
            first = False
        elif kind == b"ANMF":
            frames += 1
        elif kind == b"ICCP":
            icc = bytes(body)
        elif kind == b"EXIF":
            exif = bytes(body)
        pos += 8 + size + (size & 1)
    if first:
        raise _Bad("no image chunk")
    meta = metadata_from_raw(exif, icc, name, warn)
    w, h = _upright(w, h, meta)
    return ImageInfo(w, h, "WEBP", max(frames, 1), alpha, False, 8, meta)


# ------------------------------------------------------------------ JPEG

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(b) -> tuple[int, int, int]:
    """(width, height, components) from the first SOF segment, as libjpeg reads it."""
    pos = 2
    while pos + 4 <= len(b):
        if b[pos] != 0xFF:
            raise _Bad(f"no marker at byte {pos}")
        marker = b[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            break
        if marker in _SOF:
            return _u16(b, pos + 7, True), _u16(b, pos + 5, True), b[pos + 9]
        pos += 2 + _u16(b, pos + 2, True)
    raise _Bad("no frame header before the scan")


def _jpeg(b, name: str, warn: Warn) -> ImageInfo:
    w, h, comps = _jpeg_size(b)
    from PIL import JpegImagePlugin

    im = _pillow(JpegImagePlugin.jpeg_factory, b, name, warn)
    meta = _pillow_meta(im, name, warn) if im is not None else Metadata()
    frames = _frames(im)
    w, h = _upright(w, h, meta)
    return ImageInfo(w, h, "JPEG", frames, False, comps == 1, 8, meta)


# ------------------------------------------------------------------ TIFF


# ImageWidth, ImageLength, BitsPerSample, SamplesPerPixel, RowsPerStrip, TileWidth and
# TileLength: what the pixel limits are judged by must be what the decoder reads.
_TIFF_SIZE_TAGS = frozenset((256, 257, 258, 277, 278, 322, 323))
# The integer field types libtiff takes for them, as struct formats: BYTE, SHORT, LONG,
# SSHORT, SLONG, LONG8, SLONG8.
_TIFF_INTS = {1: "B", 3: "H", 4: "I", 8: "h", 9: "i", 16: "Q", 17: "q"}


def _tiff_ifd0(b) -> dict[int, int]:
    """The integer-valued tags of IFD0 (the first value of each); a size tag given twice
    is refused."""
    big = bytes(b[:2]) == b"MM"
    e8 = ">Q" if big else "<Q"
    if _u16(b, 2, big) == 43:  # BigTIFF
        off = struct.unpack_from(e8, b, 8)[0]
        count, first, step, at = struct.unpack_from(e8, b, off)[0], off + 8, 20, 12
    else:
        off = _u32(b, 4, big)
        count, first, step, at = _u16(b, off, big), off + 2, 12, 8
    if count > 4096:
        raise _Bad(f"{count} tags in IFD0")
    tags, seen, order = {}, set(), ">" if big else "<"
    for i in range(count):
        e = first + i * step
        tag, typ = _u16(b, e, big), _u16(b, e + 2, big)
        if tag in _TIFF_SIZE_TAGS:
            if tag in seen:  # decoders differ on which one counts
                raise _Bad(f"tag {tag} given twice in IFD0")
            if typ not in _TIFF_INTS:
                raise _Bad(f"tag {tag} of type {typ}, not an integer")
        seen.add(tag)
        if typ in _TIFF_INTS:
            tags[tag] = struct.unpack_from(order + _TIFF_INTS[typ], b, e + at)[0]
            if tags[tag] < 0 and tag in _TIFF_SIZE_TAGS:
                raise _Bad(f"tag {tag} is negative")
    return tags


def _tiff(b, name: str, warn: Warn) -> ImageInfo:
    tags = _tiff_ifd0(b)
    if 256 not in tags or 257 not in tags:
        raise _Bad("no ImageWidth or ImageLength")
    w, h = tags[256], tags[257]
    samples = tags.get(277, 1)
    if samples > 4:
        raise _Bad(f"{samples} samples per pixel (at most 4 supported)")
    tw, tl = tags.get(322, 0), tags.get(323, 0)
    if tw * tl > (w + 1024) * (h + 1024):  # tiles larger than the image need no more
        raise _Bad(f"tiles of {tw}x{tl} for a {w}x{h} image")
    from PIL import TiffImagePlugin

    im = _pillow(TiffImagePlugin.TiffImageFile, b, name, warn)
    meta = _pillow_meta(im, name, warn) if im is not None else Metadata()
    alpha = None if im is None else ("A" in im.mode or "a" in im.mode)
    grey = samples - (1 if alpha else 0) == 1
    bits = 16 if tags.get(258, 8) == 16 else 8
    w, h = _upright(w, h, meta)
    return ImageInfo(w, h, "TIFF", _frames(im), alpha, grey, bits, meta)


# ------------------------------------------------------------------ BMP, GIF, PNM


def _bmp(b, name: str, warn: Warn) -> ImageInfo:
    header = _u32(b, 14)
    if header == 12:
        w, h = _u16(b, 18), _u16(b, 20)
    else:
        w, h = struct.unpack_from("<ii", b, 18)
        h = abs(h)
    from PIL import BmpImagePlugin

    im = _pillow(BmpImagePlugin.BmpImageFile, b, name, _quiet)
    alpha = None if im is None else "A" in im.mode
    return ImageInfo(w, h, "BMP", 1, alpha, False, 8, Metadata())


def _gif(b, name: str, warn: Warn) -> ImageInfo:
    w, h = _u16(b, 6), _u16(b, 8)
    from PIL import GifImagePlugin

    im = _pillow(GifImagePlugin.GifImageFile, b, name, _quiet)
    alpha = None
    if im is not None:
        alpha = "transparency" in im.info or "A" in im.mode
        w, h = max(w, im.size[0]), max(h, im.size[1])
    return ImageInfo(w, h, "GIF", _frames(im), alpha, False, 8, Metadata())


def _pnm(b, name: str, warn: Warn) -> ImageInfo:
    head = bytes(b[:1024])
    fields: list[int] = []
    pos, want = 2, 2 if head[1:2] in b"14" else 3
    while len(fields) < want:
        while pos < len(head) and (head[pos : pos + 1].isspace() or head[pos : pos + 1] == b"#"):
            if head[pos : pos + 1] == b"#":
                pos = head.find(b"\n", pos)
                if pos < 0:
                    raise _Bad("endless comment")
            pos += 1
        start = pos
        while pos < len(head) and head[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise _Bad("no size")
        fields.append(int(head[start:pos]))
    grey = head[1:2] in b"1245"
    bits = 16 if want == 3 and fields[2] > 255 else 8
    return ImageInfo(fields[0], fields[1], "PNM", 1, False, grey, bits, Metadata())


# ------------------------------------------------------------------ Pillow


def _pillow(factory, b, name: str, warn: Warn):
    """Open with one Pillow plugin, lazily (headers only) and without Pillow's own pixel
    limit, which is ours to apply; None, with a warning, when Pillow cannot."""
    fp = b if isinstance(b, mmap.mmap) else io.BytesIO(b)
    try:
        fp.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return factory(fp)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad headers
        warn(f"{name}: metadata not read ({' '.join(str(exc).split())[:120]})")
        return None


def _pillow_meta(im, name: str, warn: Warn) -> Metadata:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exif = im.getexif()
        for w in caught[:3]:
            warn(f"{name}: {' '.join(str(w.message).split())}")
    except Exception as exc:  # noqa: BLE001
        warn(f"{name}: EXIF unreadable, not copied ({' '.join(str(exc).split())[:120]})")
        exif = None
    return metadata_from(exif, im.info.get("icc_profile"), name, warn)


def _quiet(_: str) -> None:
    """For files whose metadata is not used: Pillow's failure to open them is no news."""


def _frames(im) -> int:
    if im is None:
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # about later frames, which are not decoded
            return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - a broken later frame: the first is still there
        return 1


_PARSERS = {
    "PNG": _png,
    "WEBP": _webp,
    "JPEG": _jpeg,
    "TIFF": _tiff,
    "BMP": _bmp,
    "GIF": _gif,
    "PNM": _pnm,
}
