"""Graphics: flat colours stay flat to the border, line art gains no colours.

Two kinds of checks. The architecture's guarantees hold for any weights, so they are
tested on a model with large random weights: a flat image of any colour and size comes
out that colour everywhere (normalised rendering of colours that are the LR colour plus
combinations of zero differences), and an image of two colours comes out on the line
through them (every Gaussian's colour is an affine combination of neighbouring LR
colours, shared by the channels). The trained model's behaviour on line art, text and
pixel art is compared with bicubic's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from gsasr_cli.api import upscale
from gsasr_cli.evaluate import bicubic_method
from gsasr_cli.model import GSASR, ModelConfig
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
TRAINED = pytest.mark.skipif(
    SHIPPED.cfg.render == "additive" or SHIPPED.cfg.color != "projected",
    reason="the shipped weights predate neighbour colours and anchored rendering",
)


def render(model: GSASR, rgb: np.ndarray, scale: float) -> np.ndarray:
    """The unclamped float render, [H, W, 3]."""
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    h, w = rgb.shape[:2]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    with torch.no_grad():
        return model(x, size, (scale, scale))[0].permute(1, 2, 0).numpy()


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


@TRAINED
@pytest.mark.parametrize("fg,bg", PAIRS[:2])
@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_trained_line_art_gains_no_colours(fg, bg, scale):
    ours, bicubic = off_blend_counts(line_art(40, 48, fg, bg), fg, bg, scale, SHIPPED)
    assert ours <= bicubic


@TRAINED
@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0])
def test_trained_text_gains_no_colours(scale):
    im = PILImage.new("RGB", (90, 40), (255, 255, 255))
    ImageDraw.Draw(im).text((4, 4), "Gaussian\nsplats 42", fill=(0, 0, 200))
    rgb = np.asarray(im, np.float32) / 255.0
    ours, bicubic = off_blend_counts(rgb, (0, 0, 200), (255, 255, 255), scale, SHIPPED)
    assert ours <= bicubic


@TRAINED
@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("h,w", SIZES)
def test_trained_flat_images_stay_flat(colour, h, w):
    rgb = np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()
    out = upscale(rgb, scale=3.7, model=SHIPPED)
    assert np.abs(out.astype(int) - np.array(colour)).max() <= 2


@TRAINED
def test_trained_pixel_art_gains_no_colours():
    """A 4-colour sprite at x4: pixels far from every blend of two neighbouring colours
    are no more common than with bicubic."""
    palette = np.array([(20, 20, 30), (240, 200, 40), (200, 40, 40), (250, 250, 250)], np.uint8)
    idx = np.random.default_rng(7).integers(0, 4, (12, 12)).repeat(2, 0).repeat(2, 1)
    rgb = palette[idx]
    out = upscale(rgb, scale=4.0, model=SHIPPED).astype(np.float64)
    bic = np.rint(np.clip(bicubic_method()(rgb / 255.0, (96, 96)), 0, 1) * 255)

    def far(img: np.ndarray) -> int:
        flat = img.reshape(-1, 3)
        best = np.full(len(flat), np.inf)
        for i in range(4):
            for j in range(i, 4):
                a, b = palette[i].astype(float), palette[j].astype(float)
                span = b - a
                t = np.clip(((flat - a) @ span) / max(span @ span, 1e-9), 0, 1)
                best = np.minimum(best, np.linalg.norm(flat - (a + np.outer(t, span)), axis=1))
        return int((best > 48).sum())

    assert far(out) <= far(bic)
