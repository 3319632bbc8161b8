"""How big an output is: a scale, a width, a height, an exact size or a box to fit.

No torch here: the command line checks sizes before it imports anything heavy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import InvalidRequest

# The largest output gsasr makes: 400 megapixels (20000 x 20000), whose float32
# result alone takes 4.8 GB; beyond it, raise `max_pixels` explicitly.
MAX_OUTPUT_PIXELS = 400_000_000
_MAX_SIDE = 1 << 31  # no image side beyond this, whatever the pixel budget


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """s times the input size, rounded to the nearest pixel (halves round up)."""
    return _round(height * scale), _round(width * scale)


def _round(x: float) -> int:
    """Nearest whole pixel count >= 1; past `_MAX_SIDE` (or infinite), `_MAX_SIDE + 1`."""
    return max(1, math.floor(min(x, _MAX_SIDE + 1.0) + 0.5))


@dataclass(frozen=True)
class Sizing:
    """How big the output is: exactly one of a scale, a width, a height or a size."""

    scale: float | None = None
    width: int | None = None  # height follows, aspect ratio kept
    height: int | None = None  # width follows, aspect ratio kept
    size: tuple[int, int] | None = None  # (width, height), exact: per-axis scales
    fit: tuple[int, int] | None = None  # (width, height): the largest that fits, aspect kept

    @classmethod
    def of(
        cls,
        *,
        scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        size: tuple[int, int] | None = None,
        fit: tuple[int, int] | None = None,
    ) -> Sizing:
        """A checked Sizing; InvalidRequest unless exactly one valid value is given."""
        given = [n for n, v in (("scale", scale), ("width", width), ("height", height),
                                ("size", size), ("fit", fit)) if v is not None]  # fmt: skip
        if len(given) != 1:
            raise InvalidRequest(
                "give exactly one of scale, width, height, size or fit"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
                raise InvalidRequest(f"scale must be a number, got {scale!r}")
            if not (math.isfinite(scale) and scale >= 1):
                raise InvalidRequest(f"scale must be a number >= 1, got {scale:g}")
            scale = float(scale)
        for name, value in (("width", width), ("height", height)):
            if value is not None and not _is_side(value):
                raise InvalidRequest(f"{name} must be a whole number of pixels >= 1, got {value!r}")
        for name, box in (("size", size), ("fit", fit)):
            if box is not None and not (
                isinstance(box, tuple) and len(box) == 2 and all(map(_is_side, box))
            ):
                raise InvalidRequest(f"{name} must be (width, height) in pixels, got {box!r}")
        width, height = (None if v is None else int(v) for v in (width, height))
        size, fit = (None if b is None else (int(b[0]), int(b[1])) for b in (size, fit))
        return cls(scale, width, height, size, fit)

    def target(
        self, height: int, width: int, *, max_pixels: int = MAX_OUTPUT_PIXELS
    ) -> tuple[tuple[int, int], tuple[float, float]]:
        """((out_h, out_w), (scale_y, scale_x)) for an input of `height` x `width`;
        InvalidRequest if that would shrink the image or pass `max_pixels`."""
        if self.scale is not None:
            out, scale = output_size(height, width, self.scale), (self.scale, self.scale)
        elif self.width is not None:
            s = self.width / width
            out, scale = (_round(height * s), self.width), (s, s)
        elif self.height is not None:
            s = self.height / height
            out, scale = (self.height, _round(width * s)), (s, s)
        elif self.fit is not None:
            s = min(self.fit[0] / width, self.fit[1] / height)
            out = (min(self.fit[1], _round(height * s)), min(self.fit[0], _round(width * s)))
            scale = (s, s)
        else:
            assert self.size is not None
            w, h = self.size
            out, scale = (h, w), (h / height, w / width)
        wh = f"{width}x{height} -> {out[1]}x{out[0]}"
        if min(scale) < 1:
            raise InvalidRequest(f"{wh} would shrink the image; gsasr only enlarges")
        if max(out) > _MAX_SIDE:  # rounded from a side past any limit (--scale 1e308)
            at = f"x{scale[1]:g}" + (f" by x{scale[0]:g}" if scale[0] != scale[1] else "")
            raise InvalidRequest(
                f"{width}x{height} at {at} is over the limit of {_megapixels(max_pixels)}"
            )
        if out[0] * out[1] > max_pixels:
            raise InvalidRequest(
                f"{wh} is {_megapixels(out[0] * out[1])}, over the limit of "
                f"{_megapixels(max_pixels)}"
            )
        return out, scale

    def suffix(self) -> str:
        """File-name suffix, from the request alone: `_x3.7`, `_w1920`, `_h1080`, `_1920x1080`."""
        if self.scale is not None:  # 12 digits: 1.0000001 is not 1
            return f"_x{self.scale:.12g}"
        if self.width is not None:
            return f"_w{self.width}"
        if self.height is not None:
            return f"_h{self.height}"
        if self.fit is not None:
            return f"_fit{self.fit[0]}x{self.fit[1]}"
        assert self.size is not None
        return f"_{self.size[0]}x{self.size[1]}"


def _is_side(value: object) -> bool:
    """A whole number of pixels (int or NumPy integer) in [1, _MAX_SIDE]."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return whole and 1 <= int(value) <= _MAX_SIDE  # type: ignore[call-overload]


def _megapixels(n: int) -> str:
    """400,000,000 -> "400 megapixels"; 100 -> "100 pixels" (small limits stay readable)."""
    return f"{n / 1e6:,.0f} megapixels" if n >= 10_000_000 else f"{n:,} pixels"
