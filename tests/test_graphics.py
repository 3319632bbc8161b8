"""Graphics: flat colours stay flat to the border, line art gains no colours.

Two kinds of checks. The architecture's guarantees hold for any weights, so they are
tested on models with large random weights: a flat image of any colour and size comes
out that colour everywhere (normalised rendering of colours that are the LR colour plus
combinations of zero differences); an image of two colours comes out on the line
through them (every Gaussian's colour is an affine combination of neighbouring LR
colours, shared by the channels); and in graphics (neighbourhoods of at most
PALETTE_COLOURS colours) every output pixel stays within the range of the four LR pixels
around it (`GSASR.guard`). The shipped model's behaviour on line art, text and pixel art
is compared with bicubic's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from gsasr_cli import model as model_module
from gsasr_cli.api import upscale
from gsasr_cli.evaluate import bicubic_method
from gsasr_cli.model import GSASR, PALETTE_COLOURS, ModelConfig
from gsasr_cli.weights_io import load_model


def random_model(render: str) -> GSASR:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        cfg = ModelConfig(n_feats=16, n_resblocks=2, decoder_blocks=1, render=render)
        model = GSASR(cfg).eval()
        with torch.no_grad():
            model.decoder.head.weight.normal_(0.0, 0.5)
            model.decoder.head.bias.normal_(0.0, 0.5)
    return model


RANDOM = {render: random_model(render) for render in ("anchored", "normalized")}
SHIPPED = load_model()
PROJECTED = pytest.mark.skipif(
    SHIPPED.cfg.color != "projected",
    reason="the shipped weights predate neighbour colours: anti-aliased text has more "
    "than PALETTE_COLOURS colours per neighbourhood, and only the projection keeps it",
)


def render(model: GSASR, rgb: np.ndarray, scale: float) -> np.ndarray:
    """The unclamped float render, [H, W, 3]."""
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    h, w = rgb.shape[:2]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    with torch.no_grad():
        return model(x, size, (scale, scale))[0].permute(1, 2, 0).numpy()


PIXEL_PALETTE = np.array([(20, 20, 30), (240, 200, 40), (200, 40, 40), (250, 250, 250)], np.uint8)


def sprite(seed: int, cells: int = 12, block: int = 2) -> np.ndarray:
    """Random pixel art: `cells` x `cells` blocks of `block` pixels from PIXEL_PALETTE."""
    idx = np.random.default_rng(seed).integers(0, len(PIXEL_PALETTE), (cells, cells))
    return PIXEL_PALETTE[idx.repeat(block, 0).repeat(block, 1)]


COLOURS = [(200, 100, 50), (0, 0, 0), (255, 255, 255), (12, 250, 130), (0, 0, 255)]
SIZES = [(1, 1), (1, 6), (5, 1), (3, 2), (20, 30)]


@pytest.mark.parametrize("mode", RANDOM)
@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("scale", [2.0, 3.7, 4.0])
def test_flat_images_stay_flat_for_any_weights(mode, colour, h, w, scale):
    rgb = np.broadcast_to(np.array(colour, np.float32) / 255.0, (h, w, 3)).copy()
    out = render(RANDOM[mode], rgb, scale)
    assert np.abs(out - rgb[0, 0]).max() * 255 < 1e-3  # float rounding, far below a level


def line_art(h: int, w: int, fg, bg, spacing: int = 3, seed: int = 0) -> np.ndarray:
    """1-pixel lines (straight and diagonal) in `fg` on `bg`, float RGB."""
    im = PILImage.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(im)
    for x in range(2, w, spacing):
        draw.line([(x, 0), (x, h // 2)], fill=fg, width=1)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        x0, y0, x1, y1 = rng.integers(0, [w, h, w, h])
        draw.line([(int(x0), int(y0) // 2 + h // 2), (int(x1), int(y1) // 2 + h // 2)], fill=fg)
    return np.asarray(im, np.float32) / 255.0


def line_distance(out: np.ndarray, a, b) -> np.ndarray:
    """Distance (in levels) of each pixel from the infinite line through colours a and b."""
    a, b = np.array(a, np.float64), np.array(b, np.float64)
    d = (b - a) / np.linalg.norm(b - a)
    rel = out.reshape(-1, 3) * 255.0 - a
    return np.linalg.norm(rel - np.outer(rel @ d, d), axis=1)


def segment_distance(out: np.ndarray, a, b) -> np.ndarray:
    """Distance (in levels) of each clamped, quantised pixel from the segment a-b."""
    a, b = np.array(a, np.float64), np.array(b, np.float64)
    q = np.rint(np.clip(out, 0, 1) * 255.0).reshape(-1, 3)
    t = np.clip(((q - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(q - (a + np.outer(t, b - a)), axis=1)


PAIRS = [((0, 0, 255), (255, 255, 255)), ((255, 0, 0), (0, 0, 0)), ((40, 90, 200), (230, 200, 20))]


@pytest.mark.parametrize("mode", RANDOM)
@pytest.mark.parametrize("fg,bg", PAIRS)
@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_two_colours_stay_on_their_line_for_any_weights(mode, fg, bg, scale):
    rgb = line_art(24, 30, fg, bg)
    out = render(RANDOM[mode], rgb, scale)
    assert np.abs(out).max() > 0  # sanity: it rendered
    assert line_distance(out, fg, bg).max() < 0.01


# ----------------------------------------------------------------- the trained model


def off_blend_counts(rgb: np.ndarray, fg, bg, scale: float, model: GSASR) -> tuple[int, int]:
    """Pixels more than 48 levels off the fg-bg segment: (gsasr, bicubic)."""
    h, w = rgb.shape[:2]
    size = (round(h * scale), round(w * scale))
    ours = upscale(rgb.astype(np.float32), size=(size[1], size[0]), model=model)
    bic = bicubic_method()(rgb.astype(np.float32), size)
    return (
        int((segment_distance(ours, fg, bg) > 48).sum()),
        int((segment_distance(bic, fg, bg) > 48).sum()),
    )


@pytest.mark.parametrize("fg,bg", PAIRS[:2])
@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_trained_line_art_gains_no_colours(fg, bg, scale):
    ours, bicubic = off_blend_counts(line_art(40, 48, fg, bg), fg, bg, scale, SHIPPED)
    assert ours <= bicubic


TEXT_COLOURS = ((0, 0, 200), (255, 255, 255))


def text_image() -> np.ndarray:
    """Two lines of anti-aliased blue text on white, float RGB."""
    im = PILImage.new("RGB", (90, 40), TEXT_COLOURS[1])
    ImageDraw.Draw(im).text((4, 4), "Gaussian\nsplats 42", fill=TEXT_COLOURS[0])
    return np.asarray(im, np.float32) / 255.0


@PROJECTED
@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0])
def test_trained_text_gains_no_colours(scale):
    ours, bicubic = off_blend_counts(text_image(), *TEXT_COLOURS, scale, SHIPPED)
    assert ours <= bicubic


@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("h,w", SIZES)
def test_trained_flat_images_stay_flat(colour, h, w):
    rgb = np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()
    out = upscale(rgb, scale=3.7, model=SHIPPED)
    assert np.abs(out.astype(int) - np.array(colour)).max() <= 2


def far_from_palette_blends(img: np.ndarray, palette: np.ndarray) -> int:
    """Pixels (quantised RGB) more than 48 levels from every blend of two palette colours."""
    flat = img.reshape(-1, 3).astype(np.float64)
    best = np.full(len(flat), np.inf)
    for i in range(len(palette)):
        for j in range(i, len(palette)):
            a, b = palette[i].astype(np.float64), palette[j].astype(np.float64)
            span = b - a
            t = np.clip(((flat - a) @ span) / max(span @ span, 1e-9), 0, 1)
            best = np.minimum(best, np.linalg.norm(flat - (a + np.outer(t, span)), axis=1))
    return int((best > 48).sum())


def sprite_counts(seed: int, model: GSASR) -> tuple[int, int]:
    """A 4-colour sprite at x4: far pixels of (gsasr, bicubic)."""
    rgb = sprite(seed)
    out = upscale(rgb, scale=4.0, model=model)
    bic = np.rint(np.clip(bicubic_method()(rgb / 255.0, (96, 96)), 0, 1) * 255)
    return far_from_palette_blends(out, PIXEL_PALETTE), far_from_palette_blends(bic, PIXEL_PALETTE)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_trained_pixel_art_gains_no_colours(seed):
    """Pixels far from every blend of two neighbouring colours are no more common than
    with bicubic."""
    ours, bicubic = sprite_counts(seed, SHIPPED)
    assert ours <= bicubic


# ------------------------------------------------------------ the palette clamp (guard)


def support_range(rgb: np.ndarray, size: tuple[int, int], scale: float):
    """Per output pixel, the per-channel min and max of the four LR pixels whose centres
    surround its centre (the edge pixel repeated past the outer centres): [Ho, Wo, 3]."""
    h, w = rgb.shape[:2]

    def taps(n_out: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        u = np.floor((np.arange(n_out) + 0.5) / scale - 0.5).astype(int)
        return np.clip(u, 0, n - 1), np.clip(u + 1, 0, n - 1)

    (y0, y1), (x0, x1) = taps(size[0], h), taps(size[1], w)
    four = np.stack([rgb[y][:, x] for y in (y0, y1) for x in (x0, x1)])
    return four.min(0), four.max(0)


@pytest.mark.parametrize("mode", ["anchored", "normalized", "additive"])
@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0])
def test_pixel_art_stays_within_its_neighbours_for_any_weights(mode, scale, monkeypatch):
    model = RANDOM.get(mode) or random_model(mode)
    rgb = sprite(3).astype(np.float32) / 255.0
    out = render(model, rgb, scale)
    lo, hi = support_range(rgb, out.shape[:2], scale)
    assert (out >= lo).all() and (out <= hi).all()
    # Without the clamp these weights leave the range: the check has teeth.
    monkeypatch.setattr(model_module, "PALETTE_COLOURS", 0)
    free = render(model, rgb, scale)
    assert np.maximum(lo - free, free - hi).max() > 0.05


def test_the_clamp_holds_exactly_where_neighbourhoods_have_few_colours():
    """A pixel's guard is finite iff its 3x3 neighbourhood has <= PALETTE_COLOURS distinct
    colours (all three channels equal); on an edge <= 3 of 6, in a corner <= 2 of 4."""
    colours = np.random.default_rng(0).random((9, 3)).astype(np.float32)

    def guard_at(rgb: np.ndarray, y: int, x: int) -> torch.Tensor:
        return SHIPPED.guard(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, :, :, y, x]

    for k in range(1, 10):
        # A 3x3 with k distinct colours, seen from its centre, an edge and a corner.
        tile = colours[np.arange(9) % k].reshape(3, 3, 3)
        for (y, x), pixels in (((1, 1), 9), ((1, 0), 6), ((0, 0), 4)):
            rgb = tile[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            cy, cx = min(y, 1), min(x, 1)
            seen = len({tuple(c) for c in rgb.reshape(-1, 3)})
            guard = guard_at(np.ascontiguousarray(rgb), cy, cx)
            if seen <= -(-PALETTE_COLOURS * pixels // 9):
                assert torch.equal(guard[0], torch.from_numpy(rgb[cy, cx]))
                assert torch.equal(guard[1], guard[0])
            else:
                assert torch.isinf(guard).all() and (guard[0] < 0).all()
                assert (guard[1] > 0).all()
    # One level apart in one channel is another colour: photo-like, left alone.
    near = np.full((3, 3, 3), 0.5, np.float32)
    near[..., 0] += np.arange(9, dtype=np.float32).reshape(3, 3) / 255.0
    assert torch.isinf(guard_at(near, 1, 1)).all()
    single = np.full((1, 1, 3), 0.3, np.float32)  # a 1x1 image is its own palette
    assert torch.equal(guard_at(single, 0, 0)[0], torch.full((3,), 0.3))


def test_photographs_are_not_clamped():
    """Noise has nine distinct colours in every neighbourhood: no bound anywhere, so the
    render is the unclamped one bit for bit."""
    rgb = np.random.default_rng(1).random((20, 24, 3), dtype=np.float32)
    guard = SHIPPED.guard(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    assert torch.isinf(guard).all()
