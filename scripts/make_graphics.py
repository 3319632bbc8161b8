"""Render synthetic graphics for training: line art, charts, text, UI screens, pixel art, flat art.

Users upscale screenshots, diagrams, logos and sprites as well as photographs. These images
give the training set thin saturated lines on light and dark backgrounds (aliased and
antialiased, with parallel hatching 2-6 px apart), text in real fonts, flat UI panels with
1 px borders and gradients, pixel art enlarged by integer nearest-neighbour factors with
limited palettes and dithering, and flat colour regions with sharp edges. They are drawn at
their native resolution (sizes 512-1024 px), as the HR side of training pairs.

Output is deterministic: image i depends only on (seed, i), so `--count` can grow without
changing the earlier images. The fonts come from two Debian packages, fetched with
`apt-get download` and checked by sha256 like the photographs (fonts-dejavu-core 2.37-6,
Bitstream Vera licence; fonts-liberation2 2.1.5-1, SIL OFL 1.1); glyph rendering follows the
installed FreeType, so other machines may differ in antialiased text pixels.

    python scripts/make_graphics.py --out data/train_v2 --count 48 --seed 0

`scripts/build_dataset.py` calls `generate` (its `--graphics N` option) after the photographs.
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Font packages: name -> (version, folder of the font files inside the package).
FONT_PACKAGES = {
    "fonts-dejavu-core": ("2.37-6", "/usr/share/fonts/truetype/dejavu"),
    "fonts-liberation2": ("2.1.5-1", "/usr/share/fonts/truetype/liberation2"),
}
# The font files used, as `sha256sum` prints them.
FONT_SHA256 = """
abdc775b21b1bc470d50c97e790d276f2054b7504e56e5bd3e64f48d68582322  DejaVuSans.ttf
0d977336a6d5fba34eab8e3199eb218327161b5143749f802982c2bc34df0c96  DejaVuSans-Bold.ttf
13e61509f5c81d7c3132810f4f903e3523df89c802bf6e0674621e8f659cdfe1  DejaVuSerif.ttf
0f5db4f1749979d961019838b160bec74abdf7f9eca69553fe1aa856bbff49a4  DejaVuSansMono.ttf
8d91388f1d3604b3b8ae0e3ee2d140e50cd6122f9214514f4aca772540a4076d  LiberationSans-Regular.ttf
ba0e0dc3f7aca5b0afbc31e800531ee43be3aa79ae35b2ef1f6470a9547765c4  LiberationSans-Bold.ttf
29d12439831b7f59194efec85872f24f54eff05738933f9a860220d2abff88ba  LiberationSerif-Regular.ttf
6b3809450cf6253b36d157198dc15004a5fbade9abad5543c377feb7bb29139c  LiberationMono-Regular.ttf
"""

RGB = tuple[int, int, int]
SATURATED: tuple[RGB, ...] = (
    (255, 0, 0),
    (0, 0, 255),
    (0, 170, 0),
    (255, 0, 255),
    (0, 200, 255),
    (255, 140, 0),
    (130, 0, 255),
    (255, 220, 0),
    (0, 0, 0),
    (230, 0, 90),
    (0, 120, 255),
    (40, 200, 120),
)
SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvwz" for v in "aeiouy") + ("th", "st", "qu")


class Fonts:
    """The font files, sorted by style, opened at any size on demand."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.sans = [files[n] for n in files if "Sans" in n and "Mono" not in n]
        self.serif = [files[n] for n in files if "Serif" in n]
        self.mono = [files[n] for n in files if "Mono" in n]
        self.bold = [files[n] for n in files if "Bold" in n]
        self.regular = [files[n] for n in files if "Bold" not in n and "Mono" not in n]
        self._cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def get(self, path: Path, size: int) -> ImageFont.FreeTypeFont:
        """The font at `path` in `size` pixels."""
        key = (path, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(str(path), size)
        return self._cache[key]


def fetch_fonts(workdir: Path) -> Fonts:
    """Download the font packages, check every file's sha256, return the fonts."""
    folders: list[Path] = []
    for package, (version, folder) in FONT_PACKAGES.items():
        subprocess.run(
            ["apt-get", "download", f"{package}={version}"],
            cwd=workdir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        deb = sorted(workdir.glob(f"{package}_*.deb"))[-1]
        root = workdir / f"{package}-root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        folders.append(root / folder.lstrip("/"))
    files: dict[str, Path] = {}
    for line in FONT_SHA256.strip().splitlines():
        sha256, name = line.split()
        src = next(d / name for d in folders if (d / name).is_file())
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        if digest != sha256:
            raise SystemExit(f"{src}: sha256 {digest} does not match")
        files[name] = src
    return Fonts(files)


# ---------------------------------------------------------------- helpers


def pick(rng: np.random.Generator, items):
    """One element of a sequence."""
    return items[int(rng.integers(len(items)))]


def hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def saturated(rng: np.random.Generator, dark_bg: bool = False) -> RGB:
    """A saturated colour: a named one, or a random hue at full saturation."""
    if rng.random() < 0.5:
        c = pick(rng, SATURATED)
        return (255, 255, 255) if dark_bg and c == (0, 0, 0) else c
    return hsv(rng.random(), rng.uniform(0.8, 1.0), rng.uniform(0.85 if dark_bg else 0.6, 1.0))


def words(rng: np.random.Generator, n: int) -> str:
    """n pseudo-words, with occasional capitals, numbers and punctuation."""
    out = []
    for k in range(n):
        w = "".join(pick(rng, SYLLABLES) for _ in range(int(rng.integers(1, 4))))
        r = rng.random()
        if r < 0.08:
            w = str(int(rng.integers(0, 10 ** int(rng.integers(1, 5)))))
        elif r < 0.2 or k == 0:
            w = w.capitalize()
        if rng.random() < 0.1:
            w += pick(rng, (",", ".", ":", ";", "?", "!", ")"))
        out.append(w)
    return " ".join(out)


def canvas(rng: np.random.Generator) -> tuple[int, int]:
    """A random image size, each side 512-1024 px."""
    return int(rng.integers(512, 1025)), int(rng.integers(512, 1025))


def supersampled(
    size: tuple[int, int], bg: RGB, factor: int, paint: Callable[[ImageDraw.ImageDraw, int], None]
) -> Image.Image:
    """Paint at `factor` times the size and box-filter down: antialiased edges."""
    w, h = size
    big = Image.new("RGB", (w * factor, h * factor), bg)
    paint(ImageDraw.Draw(big), factor)
    return big.resize((w, h), Image.Resampling.BOX)


def bezier(p: np.ndarray, n: int = 64) -> list[tuple[float, float]]:
    """Points along a cubic Bezier curve with control points p (4x2)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    q = ((1 - t) ** 3) * p[0] + 3 * ((1 - t) ** 2) * t * p[1] + 3 * (1 - t) * t**2 * p[2]
    q += t**3 * p[3]
    return [(float(x), float(y)) for x, y in q]


# ---------------------------------------------------------------- kinds


def line_art(rng: np.random.Generator, fonts: Fonts) -> Image.Image:
    """Strokes of 1-3 px in saturated colours on white, paper, dark or coloured ground."""
    w, h = canvas(rng)
    ground = int(rng.integers(4))
    bg = [
        (255, 255, 255),
        (250, 247, 238),
        pick(rng, [(0, 0, 0), (30, 30, 36), (16, 24, 48)]),
        hsv(rng.random(), 0.15, 1.0),
    ][ground]
    dark = ground == 2
    factor = 1 if rng.random() < 0.5 else 4  # aliased pixel lines or antialiased vector lines

    def paint(d: ImageDraw.ImageDraw, f: int) -> None:
        for _ in range(int(rng.integers(30, 120))):
            col = saturated(rng, dark)
            lw = int(rng.integers(1, 4)) * f
            x0, y0 = rng.uniform(0, w) * f, rng.uniform(0, h) * f
            kind = int(rng.integers(7))
            if kind == 0:  # straight line, often axis-aligned
                ang = pick(rng, [0.0, np.pi / 2, np.pi / 4, rng.uniform(0, np.pi)])
                ln = rng.uniform(40, 500) * f
                d.line([(x0, y0), (x0 + ln * np.cos(ang), y0 + ln * np.sin(ang))], col, lw)
            elif kind == 1:  # curve
                pts = rng.uniform(-250, 250, (4, 2)) * f + [x0, y0]
                d.line(bezier(pts), col, lw, joint="curve")
            elif kind == 2:  # parallel hatching, the hardest case for an upscaler
                gap = int(rng.integers(2, 7)) * f
                ln = rng.uniform(60, 300) * f
                lw = f * int(rng.integers(1, 3 if gap > 2 * f else 2))
                vertical = rng.random() < 0.5
                for k in range(int(rng.integers(3, 12))):
                    o = k * (gap + lw)
                    if vertical:
                        d.line([(x0 + o, y0), (x0 + o, y0 + ln)], col, lw)
                    else:
                        d.line([(x0, y0 + o), (x0 + ln, y0 + o)], col, lw)
            elif kind == 3:  # ellipse or circle outline
                r1, r2 = rng.uniform(8, 160, 2) * f
                if rng.random() < 0.5:
                    r2 = r1
                d.ellipse([x0 - r1, y0 - r2, x0 + r1, y0 + r2], outline=col, width=lw)
            elif kind == 4:  # rectangle outline
                x1, y1 = x0 + rng.uniform(10, 300) * f, y0 + rng.uniform(10, 300) * f
                d.rectangle([x0, y0, x1, y1], outline=col, width=lw)
            elif kind == 5:  # polyline, like a hand-drawn or diagram path
                pts = np.cumsum(rng.uniform(-80, 80, (int(rng.integers(3, 9)), 2)) * f, 0)
                d.line([(x0 + a, y0 + b) for a, b in pts], col, lw, joint="curve")
            else:  # spiral
                t = np.linspace(0, rng.uniform(6, 20), 200)
                r = t * rng.uniform(2, 8) * f
                d.line(
                    [(x0 + a, y0 + b) for a, b in zip(r * np.cos(t), r * np.sin(t), strict=True)],
                    col,
                    lw,
                )

    if factor == 1:
        img = Image.new("RGB", (w, h), bg)
        paint(ImageDraw.Draw(img), 1)
        return img
    return supersampled((w, h), bg, factor, paint)


def chart(rng: np.random.Generator, fonts: Fonts) -> Image.Image:
    """A plot: axes, grid, ticks with labels, line or bar series, a legend."""
    w, h = canvas(rng)
    dark = rng.random() < 0.25
    bg, fg = ((20, 20, 24), (220, 220, 220)) if dark else ((255, 255, 255), (0, 0, 0))
    grid = (60, 60, 66) if dark else (220, 220, 220)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    d.fontmode = "1" if rng.random() < 0.3 else "L"
    font = fonts.get(pick(rng, fonts.sans), int(rng.integers(10, 16)))
    left, top, right, bottom = 70, 40, w - 30, h - 60
    nx, ny = int(rng.integers(4, 11)), int(rng.integers(4, 9))
    xstep, ystep = int(pick(rng, [1, 2, 5, 10, 25, 100])), float(pick(rng, [0.1, 0.5, 2.5, 20]))
    for k in range(nx + 1):
        x = round(left + k * (right - left) / nx)
        d.line([(x, top), (x, bottom)], grid, 1)
        d.line([(x, bottom), (x, bottom + 5)], fg, 1)
        d.text((x, bottom + 8), str(k * xstep), fg, font, anchor="mt")
    for k in range(ny + 1):
        y = round(bottom - k * (bottom - top) / ny)
        d.line([(left, y), (right, y)], grid, 1)
        d.text((left - 8, y), f"{k * ystep:g}", fg, font, anchor="rm")
    d.line([(left, top), (left, bottom), (right, bottom)], fg, 1)
    colours = [saturated(rng, dark) for _ in range(int(rng.integers(2, 6)))]
    if rng.random() < 0.35:  # bars
        groups = int(rng.integers(3, 10))
        slot = (right - left) / groups
        bw = max(2, int(slot * 0.8 / len(colours)))
        for g in range(groups):
            for c, col in enumerate(colours):
                x = int(left + g * slot + slot * 0.1 + c * bw)
                y = int(bottom - rng.uniform(0.05, 0.95) * (bottom - top))
                d.rectangle([x, y, x + bw - 2, bottom - 1], col)
    else:
        for col in colours:
            n = int(rng.integers(8, 80))
            xs = np.linspace(left, right, n)
            ys = bottom - (bottom - top) * np.clip(
                0.5 + np.cumsum(rng.normal(0, 0.08, n)), 0.02, 0.98
            )
            d.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), col, int(rng.integers(1, 3)))
            if rng.random() < 0.5:
                for x, y in zip(xs, ys, strict=True):
                    d.rectangle([x - 2, y - 2, x + 2, y + 2], outline=col)
    lx, ly = right - 150, top + 10
    d.rectangle([lx, ly, right - 10, ly + 20 * len(colours) + 8], bg, fg, 1)
    for c, col in enumerate(colours):
        y = ly + 14 + 20 * c
        d.line([(lx + 8, y), (lx + 38, y)], col, 2)
        d.text((lx + 46, y), words(rng, 1), fg, font, anchor="lm")
    d.text((w // 2, 12), words(rng, 4), fg, fonts.get(pick(rng, fonts.bold), 16), anchor="mt")
    return img


def text(rng: np.random.Generator, fonts: Fonts) -> Image.Image:
    """A document page, a code editor or a poster of large coloured lettering."""
    w, h = canvas(rng)
    mode = int(rng.integers(3))
    if mode == 0:  # document: dark text on light paper, a heading, links
        img = Image.new("RGB", (w, h), pick(rng, [(255, 255, 255), (248, 246, 240)]))
        d = ImageDraw.Draw(img)
        d.fontmode = "1" if rng.random() < 0.3 else "L"
        face = pick(rng, fonts.regular)
        size = int(rng.integers(10, 24))
        y, margin = 20, int(rng.integers(10, 60))
        d.text((margin, y), words(rng, 5), (0, 0, 0), fonts.get(pick(rng, fonts.bold), size * 2))
        y += size * 3
        while y < h - size:
            line = words(rng, int((w - 2 * margin) / (size * 3.2)) + 1)
            colour = pick(rng, [(0, 0, 0), (40, 40, 40), (0, 0, 0), (20, 20, 200)])
            d.text((margin, y), line, colour, fonts.get(face, size))
            if colour == (20, 20, 200):
                length = d.textlength(line, fonts.get(face, size))
                d.line([(margin, y + size + 1), (margin + length, y + size + 1)], colour, 1)
            y += int(size * rng.uniform(1.2, 1.8))
            if rng.random() < 0.12:
                y += size
        return img
    if mode == 1:  # code editor with a line-number gutter and syntax colours
        dark = rng.random() < 0.7
        bg = pick(rng, [(30, 30, 30), (40, 44, 52), (0, 43, 54)]) if dark else (255, 255, 255)
        img = Image.new("RGB", (w, h), bg)
        d = ImageDraw.Draw(img)
        d.fontmode = "1" if rng.random() < 0.3 else "L"
        size = int(rng.integers(11, 19))
        font = fonts.get(pick(rng, fonts.mono), size)
        gutter = size * 3
        d.rectangle([0, 0, gutter, h], tuple(max(0, c - 12) for c in bg))
        palette = [saturated(rng, dark) for _ in range(5)] + [(200, 200, 200) if dark else (0,) * 3]
        step = int(size * 1.4)
        for k, y in enumerate(range(6, h - size, step)):
            d.text((4, y), f"{k + 1:3d}", (120, 120, 120), font)
            x = gutter + 8 + size * int(rng.integers(0, 5))
            for _ in range(int(rng.integers(0, 8))):
                token = words(rng, 1) + pick(rng, ["", "(", ")", " =", ":", ".", "[]", " {"])
                d.text((x, y), token, pick(rng, palette), font)
                x += d.textlength(token + " ", font)
                if x > w:
                    break
        return img
    # poster: blocks of flat colour with large lettering
    img = Image.new("RGB", (w, h), saturated(rng))
    d = ImageDraw.Draw(img)
    d.fontmode = "1" if rng.random() < 0.3 else "L"
    y = 0
    while y < h:
        bh = int(rng.integers(60, 260))
        d.rectangle([0, y, w, y + bh], saturated(rng))
        size = int(rng.integers(20, min(120, bh)))
        fill = pick(rng, [(255, 255, 255), (0, 0, 0), saturated(rng)])
        stroke = int(rng.integers(0, 3))
        d.text(
            (int(rng.integers(0, w // 3)), y + (bh - size) // 2),
            words(rng, 3),
            fill,
            fonts.get(pick(rng, fonts.bold + fonts.sans), size),
            stroke_width=stroke,
            stroke_fill=(0, 0, 0) if fill != (0, 0, 0) else (255, 255, 255),
        )
        y += bh
    return img


def ui(rng: np.random.Generator, fonts: Fonts) -> Image.Image:
    """A desktop screen: windows with title bars, buttons, fields, lists, icons, gradients."""
    w, h = canvas(rng)
    dark = rng.random() < 0.4
    desk = hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.8))
    panel, fg, border = (
        ((45, 45, 48), (230, 230, 230), (80, 80, 86))
        if dark
        else ((240, 240, 240), (20, 20, 20), (160, 160, 160))
    )
    accent = saturated(rng)
    img = Image.new("RGB", (w, h), desk)
    d = ImageDraw.Draw(img)
    font = fonts.get(pick(rng, fonts.sans), int(rng.integers(11, 16)))
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        x1 = min(w - 1, x0 + int(rng.integers(300, w)))
        y1 = min(h - 1, y0 + int(rng.integers(250, h)))
        d.rectangle([x0, y0, x1, y1], panel, border, 1)
        top = tuple(min(255, c + 30) for c in accent)
        for k in range(28):  # title bar with a vertical gradient
            t = k / 27
            d.line(
                [(x0 + 1, y0 + 1 + k), (x1 - 1, y0 + 1 + k)],
                tuple(round(a * (1 - t) + b * t) for a, b in zip(top, accent, strict=True)),
            )
        d.text((x0 + 10, y0 + 14), words(rng, 3), (255, 255, 255), font, anchor="lm")
        for k, glyph in enumerate("x+-"):
            cx = x1 - 16 - 22 * k
            d.rectangle([cx - 8, y0 + 6, cx + 8, y0 + 22], outline=(255, 255, 255))
            d.text((cx, y0 + 14), glyph, (255, 255, 255), font, anchor="mm")
        side = x0 + int(rng.integers(100, 200))
        d.line([(side, y0 + 29), (side, y1 - 1)], border, 1)
        sel = int(rng.integers(0, 8))
        for k, y in enumerate(range(y0 + 36, y1 - 20, 24)):
            if k == sel:
                d.rectangle([x0 + 1, y - 4, side - 1, y + 18], accent)
            d.rectangle([x0 + 8, y, x0 + 22, y + 14], saturated(rng))  # icon
            d.text((x0 + 28, y + 7), words(rng, 1), fg, font, anchor="lm")
        y = y0 + 44
        while y < y1 - 40:
            x = side + 16
            widget = int(rng.integers(5))
            if widget == 0:  # buttons
                for _ in range(int(rng.integers(1, 4))):
                    label = words(rng, 1)
                    bw = int(d.textlength(label, font)) + 24
                    fill = accent if rng.random() < 0.4 else panel
                    d.rounded_rectangle(
                        [x, y, x + bw, y + 26], int(rng.integers(0, 8)), fill, border, 1
                    )
                    d.text((x + bw // 2, y + 13), label, fg, font, anchor="mm")
                    x += bw + 10
            elif widget == 1:  # text field
                d.rectangle(
                    [x, y, min(x1 - 16, x + 260), y + 24],
                    (255, 255, 255) if not dark else (30, 30, 30),
                    border,
                    1,
                )
                d.text((x + 6, y + 12), words(rng, 3), fg, font, anchor="lm")
            elif widget == 2:  # check boxes and radio buttons
                for _ in range(3):
                    d.rectangle([x, y + 4, x + 14, y + 18], None, border, 1)
                    if rng.random() < 0.5:
                        d.line([(x + 3, y + 11), (x + 6, y + 15), (x + 12, y + 6)], accent, 2)
                    d.text((x + 20, y + 11), words(rng, 1), fg, font, anchor="lm")
                    x += 110
            elif widget == 3:  # slider and progress bar
                end = min(x1 - 16, x + 300)
                d.line([(x, y + 8), (end, y + 8)], border, 2)
                knob = x + int(rng.uniform(0, 1) * (end - x))
                d.ellipse([knob - 7, y + 1, knob + 7, y + 15], accent, border)
                d.rectangle([x, y + 20, end, y + 30], None, border, 1)
                d.rectangle(
                    [x + 1, y + 21, x + 1 + int(rng.uniform(0, 1) * (end - x - 2)), y + 29], accent
                )
            else:  # separator and label
                d.line([(x, y + 10), (x1 - 16, y + 10)], border, 1)
                d.text((x, y + 14), words(rng, 4), fg, font)
            y += 40
    return img


def pixel_art(rng: np.random.Generator, fonts: Fonts) -> Image.Image:
    """Tiles and sprites in a small palette, enlarged by an integer nearest-neighbour factor."""
    w, h = canvas(rng)
    scale = int(pick(rng, [2, 3, 4, 4, 5, 6, 8]))
    lw, lh = -(-w // scale), -(-h // scale)
    n = int(rng.integers(4, 17))
    base = rng.random()
    palette = np.array(
        [
            hsv(base + rng.normal(0, 0.25), rng.uniform(0.3, 1.0), rng.uniform(0.15, 1.0))
            for _ in range(n)
        ],
        np.uint8,
    )
    palette = palette[np.argsort(palette.astype(int).sum(1))]  # dark to light
    tile = int(pick(rng, [8, 16]))
    a, b = rng.choice(n, 2, replace=False)
    pattern = rng.integers(0, 3)
    ty, tx = np.mgrid[0:tile, 0:tile]
    if pattern == 0:  # bricks
        motif = (ty % (tile // 2) == 0) | ((tx + (ty // (tile // 2)) * (tile // 2)) % tile == 0)
    elif pattern == 1:  # checker dithering
        motif = (tx + ty) % 2 == 0
    else:  # speckled ground
        motif = rng.random((tile, tile)) < 0.2
    tiles = np.where(motif, a, b)
    low = np.tile(tiles, (lh // tile + 1, lw // tile + 1))[:lh, :lw]
    if rng.random() < 0.5:  # an ordered-dither gradient band, as in 8-bit skies
        bayer = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]) / 16
        band = int(lh * rng.uniform(0.2, 0.6))
        yy, xx = np.mgrid[0:band, 0:lw]
        c0, c1 = rng.choice(n, 2, replace=False)
        low[:band] = np.where(yy / band > bayer[yy % 4, xx % 4], c1, c0)
    for _ in range(int(rng.integers(3, 30))):
        s = int(pick(rng, [8, 12, 16, 24, 32]))
        half = rng.random((s, s // 2)) < 0.5
        for _ in range(2):  # smooth the noise into a blob: majority of the 3x3 neighbourhood
            p = np.pad(half, 1)
            half = (
                sum(
                    p[1 + dy : 1 + dy + s, 1 + dx : 1 + dx + s // 2]
                    for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)
                )
                >= 5
            )
        mask = np.concatenate([half, half[:, ::-1]], 1)
        body = rng.choice(n, 3)
        shade = np.where(
            np.arange(s)[:, None] < s // 3,
            body[0],
            np.where(rng.random((s, s)) < 0.15, body[2], body[1]),
        )
        edge = mask & ~(
            np.pad(mask, 1)[2:, 1:-1]
            & np.pad(mask, 1)[:-2, 1:-1]
            & np.pad(mask, 1)[1:-1, 2:]
            & np.pad(mask, 1)[1:-1, :-2]
        )
        sprite = np.where(edge, 0, shade)
        y, x = int(rng.integers(0, max(1, lh - s))), int(rng.integers(0, max(1, lw - s)))
        region = low[y : y + s, x : x + s]
        m = mask[: region.shape[0], : region.shape[1]]
        region[m] = sprite[: region.shape[0], : region.shape[1]][m]
    rgb = palette[low]
    big = np.repeat(np.repeat(rgb, scale, 0), scale, 1)[:h, :w]
    return Image.fromarray(np.ascontiguousarray(big))


def flat_art(rng: np.random.Generator, fonts: Fonts) -> Image.Image:
    """Flat colour shapes with sharp edges: logos, flags, icons, vector illustration."""
    w, h = canvas(rng)
    factor = 1 if rng.random() < 0.4 else 4
    outline = rng.random() < 0.4

    def paint(d: ImageDraw.ImageDraw, f: int) -> None:
        if rng.random() < 0.4:  # flag-like stripes
            k = int(rng.integers(2, 6))
            vertical = rng.random() < 0.5
            for i in range(k):
                box = (
                    [i * w * f / k, 0, (i + 1) * w * f / k, h * f]
                    if vertical
                    else [0, i * h * f / k, w * f, (i + 1) * h * f / k]
                )
                d.rectangle(box, saturated(rng))
        for _ in range(int(rng.integers(5, 40))):
            col = saturated(rng) if rng.random() < 0.7 else hsv(rng.random(), 0.4, 0.9)
            line = (0, 0, 0) if outline else None
            lw = int(rng.integers(1, 4)) * f
            cx, cy, r = rng.uniform(0, w) * f, rng.uniform(0, h) * f, rng.uniform(10, 200) * f
            shape = int(rng.integers(4))
            if shape == 0:
                d.ellipse([cx - r, cy - r, cx + r, cy + r], col, line, lw)
            elif shape == 1:
                d.rectangle([cx - r, cy - r * rng.uniform(0.3, 1), cx + r, cy + r], col, line, lw)
            elif shape == 2:
                k = int(rng.integers(3, 9))
                star = rng.random() < 0.5
                ang = np.linspace(0, 2 * np.pi, 2 * k if star else k, endpoint=False)
                rad = np.where(np.arange(ang.size) % 2 == 1, r * 0.45, r) if star else r
                pts = list(zip(cx + rad * np.cos(ang), cy + rad * np.sin(ang), strict=True))
                d.polygon(pts, col, line, lw)
            else:
                d.pieslice(
                    [cx - r, cy - r, cx + r, cy + r],
                    rng.uniform(0, 360),
                    rng.uniform(0, 360),
                    col,
                    line,
                    lw,
                )

    bg = saturated(rng) if rng.random() < 0.5 else (255, 255, 255)
    if factor == 1:
        img = Image.new("RGB", (w, h), bg)
        paint(ImageDraw.Draw(img), 1)
        return img
    return supersampled((w, h), bg, factor, paint)


KINDS: dict[str, Callable[[np.random.Generator, Fonts], Image.Image]] = {
    "lines": line_art,
    "chart": chart,
    "text": text,
    "ui": ui,
    "pixelart": pixel_art,
    "flat": flat_art,
}


def generate(out: Path, count: int, seed: int, workdir: Path) -> list[Path]:
    """Write `count` graphics PNGs into `out`, cycling through the kinds; returns their paths."""
    if count <= 0:
        return []
    fonts = fetch_fonts(workdir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(KINDS)
    paths = []
    for i in range(count):
        kind = names[i % len(names)]
        rng = np.random.default_rng([seed, i])
        img = KINDS[kind](rng, fonts)
        path = out / f"graphics__{kind}__{seed}_{i:04d}.png"
        img.save(path)
        paths.append(path)
        print(f"{path.name}: {img.width}x{img.height}", file=sys.stderr)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/train_v2"))
    parser.add_argument("--count", type=int, default=48, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gsasr-fonts-") as tmp:
        generate(args.out, args.count, args.seed, Path(tmp))


if __name__ == "__main__":
    main()
