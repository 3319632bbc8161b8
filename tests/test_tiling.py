"""Tiled inference: equal to the untiled render, robust to out-of-memory and to NaN.

Tiled and untiled outputs are identical to the last bit on the CPU: the tiler keeps every
convolution on the same backend as the whole image, and the model writes sigmoid through
tanh (PyTorch's CPU sigmoid rounds the scalar tail of its vector loop differently, at
positions that depend on the tensor's size; with it, a dozen pixels differed by 1.2e-7).
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import graphics_and_photo

from gsasr_cli import model as model_module
from gsasr_cli import tiling
from gsasr_cli.errors import GsasrError
from gsasr_cli.model import GSASR, ModelConfig
from gsasr_cli.sizing import output_size
from gsasr_cli.tiling import MIN_TILE, auto_tile, halo, receptive_radii, upscale_tiled
from gsasr_cli.weights_io import default_weights_path, load_model

SMALL = ModelConfig(n_feats=8, n_resblocks=2, decoder_blocks=1)
CPU = torch.device("cpu")
OOM_MESSAGE = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234 bytes."


def make_small_model(render: str = SMALL.render) -> GSASR:
    """A seeded random model whose Gaussians vary strongly from cell to cell."""
    with torch.random.fork_rng(devices=[]):  # leave the global generator as it was
        torch.manual_seed(0)
        model = GSASR(replace(SMALL, render=render)).eval()
        with torch.no_grad():  # the head starts near zero, which would render a flat field
            model.decoder.head.weight.normal_(0.0, 0.3)
    return model


SMALL_MODEL = make_small_model()


def image(h: int, w: int, seed: int = 0) -> np.ndarray:  # [h, w, 3] float32 in [0, 1]
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


@functools.cache
def untiled(h: int, w: int, scale: tuple[float, float]) -> np.ndarray:
    """The small model's whole-image render, once per case."""
    size = math.floor(h * scale[0] + 0.5), math.floor(w * scale[1] + 0.5)
    return whole_image(SMALL_MODEL, image(h, w), size, scale)


def whole_image(model, rgb, size, scale) -> np.ndarray:
    """The model's forward on the whole image: the reference every tiling is held to."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return model(x, size, scale)[0].permute(1, 2, 0).numpy()


def quantise(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def assert_same_image(tiled: np.ndarray, whole: np.ndarray) -> None:
    assert tiled.shape == whole.shape
    q = np.abs(quantise(tiled).astype(np.int16) - quantise(whole)).max()
    diff = float(np.abs(tiled - whole).max())
    assert q == 0, f"uint8 images differ by {q} (float max {diff:.3g})"
    assert diff == 0, f"float max difference {diff:.3g}"


def out_of_memory_above(side: int, error: BaseException):
    """A stand-in for `render_region` that fails like the allocator on larger tiles."""
    real = tiling.render_region

    def render(run, tile):
        y0, y1, x0, x1 = tile.cells
        if max(y1 - y0, x1 - x0) > side:
            raise error
        return real(run, tile)

    return render


# ----------------------------------------------------------------- halo


def test_halo_is_derived_from_the_config():
    assert receptive_radii(ModelConfig()) == (34, 4)  # 1 + 16 * 2 + 1 convs; 2 blocks of 2
    assert halo(ModelConfig()) == 39
    assert halo(SMALL) == 6 + 2 + 1
    assert halo(ModelConfig(n_resblocks=4, decoder_blocks=3, radius=2)) == 10 + 6 + 2


def test_receptive_radius_is_that_of_the_network():
    """Perturbing one LR pixel changes the Gaussians of exactly the cells within the radius."""
    model = copy.deepcopy(SMALL_MODEL).double()
    lr = torch.rand(1, 3, 41, 41, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bumped = lr.clone()
    bumped[0, :, 20, 20] += 0.5
    with torch.no_grad():
        a, b = (model.gaussians(x, (2.0, 2.0)) for x in (lr, bumped))
    changed = ((a.means - b.means).abs().amax((-2, -1)) > 0)[0]  # [H, W]
    ys, xs = torch.nonzero(changed, as_tuple=True)
    reach = int(torch.maximum((ys - 20).abs(), (xs - 20).abs()).max())
    assert reach == sum(receptive_radii(SMALL))


def test_a_halo_one_short_is_not_exact(monkeypatch):
    """The exactness tests can fail: an encoder radius one short moves the output by far more
    than rounding (5e-5 here)."""
    h, w, s = 200, 200, (2.0, 2.0)
    enc, dec = receptive_radii(SMALL)
    monkeypatch.setattr(tiling, "receptive_radii", lambda cfg: (enc - 1, dec))
    tiled = upscale_tiled(SMALL_MODEL, image(h, w), (400, 400), s, CPU, 96).image
    assert np.abs(tiled - untiled(h, w, s)).max() > 1e-6


# ----------------------------------------------------------------- exactness

CASES = [  # (h, w, tile): LR larger than the tile, non-square, tiles not dividing the image
    (90, 110, 32),
    (90, 110, 48),
    (90, 110, 64),
    (90, 110, 37),
    (150, 200, 128),
]


@pytest.mark.parametrize("scale", [2.0, 3.7, 4.0])
@pytest.mark.parametrize("h,w,tile", CASES)
def test_tiled_equals_untiled(h, w, tile, scale):
    size = output_size(h, w, scale)
    res = upscale_tiled(SMALL_MODEL, image(h, w), size, (scale, scale), CPU, tile)
    assert res.tiles == math.ceil(h / tile) * math.ceil(w / tile) > 1
    assert res.tile == tile and res.oom_retries == 0
    assert_same_image(res.image, untiled(h, w, (scale, scale)))


@pytest.mark.parametrize("render", ["anchored", "additive"])
@pytest.mark.parametrize("scale", [(2.0, 2.0), (3.7, 2.5)])
def test_tiled_equals_untiled_in_every_render_mode(render, scale):
    """The anchored base reads the neighbouring cells' colours: tile borders included."""
    model = make_small_model(render)
    h, w = 90, 110
    size = math.floor(h * scale[0] + 0.5), math.floor(w * scale[1] + 0.5)
    res = upscale_tiled(model, image(h, w, seed=1), size, scale, CPU, 37)
    assert res.tiles == 9
    assert_same_image(res.image, whole_image(model, image(h, w, seed=1), size, scale))


@pytest.mark.parametrize("render", ["anchored", "additive"])
@pytest.mark.parametrize("scale", [(2.0, 2.0), (3.7, 2.5)])
def test_tiled_equals_untiled_where_graphics_are_clamped(render, scale, monkeypatch):
    """The palette clamp reads the four LR pixels around each output pixel and their
    neighbourhoods: tile borders through pixel art included."""
    model = make_small_model(render)
    rgb = graphics_and_photo(90, 110, seed=2)
    size = math.floor(90 * scale[0] + 0.5), math.floor(110 * scale[1] + 0.5)
    res = upscale_tiled(model, rgb, size, scale, CPU, 37)
    assert res.tiles == 9
    whole = whole_image(model, rgb, size, scale)
    assert_same_image(res.image, whole)
    monkeypatch.setattr(model_module, "PALETTE_COLOURS", 0)  # no clamp: a different image
    assert np.abs(whole_image(model, rgb, size, scale) - whole).max() > 0.05


def test_tiled_equals_untiled_with_per_axis_scales():
    s = (2.0, 3.7)
    tiled = upscale_tiled(SMALL_MODEL, image(90, 110), (180, 407), s, CPU, 32).image
    assert_same_image(tiled, untiled(90, 110, s))


def test_untiled_mode_equals_the_models_forward():
    assert np.array_equal(
        upscale_tiled(SMALL_MODEL, image(90, 110), (333, 407), (3.7, 3.7), CPU, 0).image,
        untiled(90, 110, (3.7, 3.7)),
    )


@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped weights missing")
@pytest.mark.parametrize("tile,scale,tiles", [(48, 3.7, 6), (64, 2.0, 4)])
def test_shipped_model_tiled_equals_untiled(tile, scale, tiles):
    model = load_model()
    rgb, size = image(96, 120, seed=3), output_size(96, 120, scale)
    res = upscale_tiled(model, rgb, size, (scale, scale), CPU, tile)
    assert res.tiles == tiles
    assert_same_image(res.image, whole_image(model, rgb, size, (scale, scale)))


def test_progress_callback_counts_tiles():
    calls = []
    upscale_tiled(
        SMALL_MODEL,
        image(90, 110),
        (180, 220),
        (2.0, 2.0),
        CPU,
        48,
        on_tile=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 6) for i in range(1, 7)]  # 2 x 3 tiles


# ----------------------------------------------------------------- tile size and memory


def test_auto_tile_fits_the_free_memory(monkeypatch):
    size, scale = (600, 800), (4.0, 4.0)
    out = (2400, 3200)
    t = auto_tile(SMALL_MODEL, size, out, scale, CPU)
    assert t == 0 or t >= MIN_TILE
    monkeypatch.setattr(tiling, "free_memory", lambda device: 1 << 40)
    assert auto_tile(SMALL_MODEL, size, out, scale, CPU) == 0  # everything fits: untiled
    budget_mb = 300
    monkeypatch.setattr(tiling, "free_memory", lambda device: budget_mb << 20)
    t = auto_tile(SMALL_MODEL, size, out, scale, CPU)
    budget = tiling.SAFETY * (budget_mb << 20) - out[0] * out[1] * 12

    def cost(t):
        side = t + 2 * halo(SMALL)
        return tiling.tile_bytes(SMALL, min(side, 600), min(side, 800), t * t * 16)

    assert MIN_TILE <= t < 600 and t % 16 == 0
    assert cost(t) <= budget < cost(t + 16)
    monkeypatch.setattr(tiling, "free_memory", lambda device: 1 << 20)
    assert auto_tile(SMALL_MODEL, size, out, scale, CPU) == MIN_TILE


def test_auto_tile_is_untiled_when_the_image_fits_and_capped_on_cpu(monkeypatch):
    monkeypatch.setattr(tiling, "free_memory", lambda device: 64 << 30)
    assert auto_tile(SMALL_MODEL, (14, 10), (28, 20), (2.0, 2.0), CPU) == 0
    model = GSASR(ModelConfig()).eval()  # 64 features: 2048^2 LR needs far more than the cap
    t = auto_tile(model, (2048, 2048), (8192, 8192), (4.0, 4.0), CPU)
    side = t + 2 * halo(model.cfg)
    assert 0 < t < 2048 and tiling.tile_bytes(model.cfg, side, side, t * t * 16) <= (
        tiling.CPU_TILE_BYTES
    )


@pytest.mark.parametrize(
    "error",
    [RuntimeError(OOM_MESSAGE), MemoryError(), torch.cuda.OutOfMemoryError("CUDA out of memory.")],
)
def test_out_of_memory_halves_the_tile_and_stays_exact(monkeypatch, error):
    monkeypatch.setattr(tiling, "render_region", out_of_memory_above(40, error))
    calls = []
    res = upscale_tiled(
        SMALL_MODEL,
        image(90, 110),
        (333, 407),
        (3.7, 3.7),
        CPU,
        128,
        on_tile=lambda done, total: calls.append((done, total)),
    )
    assert (res.tile, res.oom_retries, res.tiles) == (32, 2, 12)
    assert calls[-1] == (12, 12)
    monkeypatch.undo()
    direct = upscale_tiled(SMALL_MODEL, image(90, 110), (333, 407), (3.7, 3.7), CPU, 32)
    assert np.array_equal(res.image, direct.image)
    assert_same_image(res.image, untiled(90, 110, (3.7, 3.7)))


def test_out_of_memory_when_untiled_falls_back_to_tiles(monkeypatch):
    monkeypatch.setattr(tiling, "render_region", out_of_memory_above(60, RuntimeError(OOM_MESSAGE)))
    res = upscale_tiled(SMALL_MODEL, image(90, 110), (180, 220), (2.0, 2.0), CPU, 0)
    assert (res.tile, res.oom_retries, res.tiles) == (55, 1, 4)
    assert_same_image(res.image, untiled(90, 110, (2.0, 2.0)))


def test_gives_up_below_the_minimum_tile(monkeypatch):
    monkeypatch.setattr(tiling, "render_region", out_of_memory_above(0, RuntimeError(OOM_MESSAGE)))
    with pytest.raises(GsasrError, match=r"out of memory on cpu even with 16x16 LR tiles"):
        upscale_tiled(SMALL_MODEL, image(90, 110), (180, 220), (2.0, 2.0), CPU, 64)


def test_other_errors_are_not_taken_for_out_of_memory(monkeypatch):
    monkeypatch.setattr(
        tiling, "render_region", out_of_memory_above(0, RuntimeError("expected a 4-D tensor"))
    )
    with pytest.raises(RuntimeError, match="4-D"):
        upscale_tiled(SMALL_MODEL, image(90, 110), (180, 220), (2.0, 2.0), CPU, 64)


@pytest.mark.parametrize("tile", [-1, 1, MIN_TILE - 1])
def test_rejects_tiles_below_the_minimum(tile):
    with pytest.raises(ValueError, match="tile side"):
        upscale_tiled(SMALL_MODEL, image(20, 20), (40, 40), (2.0, 2.0), CPU, tile)


# ----------------------------------------------------------------- precision


@pytest.mark.parametrize(
    "precision,match",
    [
        ("fp16", "needs a CUDA device"),
        ("bf16", "needs a CUDA device"),
        ("fp8", "'fp8' is not a valid Precision"),
    ],
)
def test_cpu_runs_fp32_only(precision, match):
    with pytest.raises(ValueError, match=match):
        upscale_tiled(SMALL_MODEL, image(20, 20), (40, 40), (2.0, 2.0), CPU, 0, precision=precision)


def test_low_precision_runs_under_autocast(monkeypatch):
    """CPU autocast (bf16) stands in for CUDA's: CUDA itself is not exercised here."""
    monkeypatch.setattr(tiling, "autocast_dtype", lambda precision, device: torch.bfloat16)
    res = upscale_tiled(
        SMALL_MODEL, image(90, 110), (180, 220), (2.0, 2.0), CPU, 48, precision="bf16"
    )
    diff = np.abs(res.image - untiled(90, 110, (2.0, 2.0))).max()
    assert res.fp32_fallbacks == 0 and 0 < diff < 0.1  # bf16 really ran, and stayed close


def test_non_finite_low_precision_tiles_are_redone_in_fp32(monkeypatch):
    """A decoder that overflows to NaN under autocast: every tile is redone in fp32."""
    model = make_small_model()
    forward = model.decoder.forward

    def overflowing(feat, inv_scale):
        raw = forward(feat, inv_scale)
        return raw * float("nan") if torch.is_autocast_enabled("cpu") else raw

    model.decoder.forward = overflowing  # this instance only
    args = (model, image(90, 110), (180, 220), (2.0, 2.0), CPU, 48)
    fp32 = upscale_tiled(*args).image
    monkeypatch.setattr(tiling, "autocast_dtype", lambda precision, device: torch.bfloat16)
    res = upscale_tiled(*args, precision="bf16")
    assert res.fp32_fallbacks == res.tiles == 6
    assert np.array_equal(res.image, fp32)


def test_out_of_memory_errors_are_recognised():
    assert tiling.is_out_of_memory(RuntimeError(OOM_MESSAGE))
    assert tiling.is_out_of_memory(MemoryError())
    assert tiling.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert not tiling.is_out_of_memory(RuntimeError("expected a 4-D tensor"))
    assert not tiling.is_out_of_memory(ValueError("out of memory"))
