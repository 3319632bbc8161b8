"""The flip/transpose self-ensemble: each field mapped back exactly, tiled equals untiled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import graphics_and_photo

from gsasr_cli.model import GSASR, ModelConfig
from gsasr_cli.tiling import upscale_tiled
from gsasr_cli.tta import ENSEMBLE, IDENTITY, Transform

CPU = torch.device("cpu")


def small_model() -> GSASR:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = GSASR(ModelConfig(n_feats=8, n_resblocks=2, decoder_blocks=1)).eval()
        with torch.no_grad():
            model.decoder.head.weight.normal_(0.0, 0.3)
    return model


MODEL = small_model()


def lr_image(h: int, w: int) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(2))


def test_the_ensemble_is_the_eight_symmetries_of_the_square():
    assert len(set(ENSEMBLE)) == 8 and ENSEMBLE[0] == IDENTITY
    x = lr_image(5, 7)
    for t in ENSEMBLE:
        assert torch.equal(t.inverse_image(t.image(x)), x)
    images = {tuple(t.image(lr_image(4, 4)).flatten().tolist()) for t in ENSEMBLE}
    assert len(images) == 8


@pytest.mark.parametrize("t", ENSEMBLE, ids=str)
@pytest.mark.parametrize("scale", [(2.0, 2.0), (3.0, 2.0)])
def test_a_mapped_back_field_renders_the_flipped_render(t: Transform, scale):
    """Where the output grid is symmetric (integer scales), rendering the field mapped back
    equals flipping the render of the transformed image: the means, axes and correlation
    are mirrored correctly."""
    x = lr_image(6, 9)
    size = (int(6 * scale[0]), int(9 * scale[1]))
    with torch.no_grad():
        field = MODEL.gaussians(t.image(x), t.scale(scale))
        guard = MODEL.guard(t.image(x))
        flipped = t.inverse_image(MODEL.render(field, *_maps(t, size, scale, x), guard))
        from gsasr_kernels import axis_map

        rows, cols = axis_map(size[0], scale[0], 6), axis_map(size[1], scale[1], 9)
        back = MODEL.render(t.inverse_field(field), rows, cols, MODEL.guard(x))
    torch.testing.assert_close(back, flipped, rtol=0, atol=2e-6)
    if t != IDENTITY:  # the network is not flip-equivariant: the field really differs
        with torch.no_grad():
            plain = MODEL(x, size, scale)
        assert (plain - back).abs().max() > 1e-3


def _maps(t: Transform, size, scale, x):
    from gsasr_kernels import axis_map

    h, w = x.shape[-2:]
    (ho, wo), (sy, sx), (hh, ww) = size, scale, (h, w)
    if t.transpose:
        ho, wo, sy, sx, hh, ww = wo, ho, sx, sy, w, h
    return axis_map(ho, sy, hh), axis_map(wo, sx, ww)


@pytest.mark.parametrize("scale", [(3.7, 3.7), (2.0, 2.6)])
def test_ensemble_tiled_equals_untiled(scale):
    rgb = graphics_and_photo(70, 90, seed=3)  # the palette clamp too, across tile borders
    size = (round(70 * scale[0]), round(90 * scale[1]))
    whole = upscale_tiled(MODEL, rgb, size, scale, CPU, 0, tta=True)
    calls = []
    tiled = upscale_tiled(
        MODEL, rgb, size, scale, CPU, 32, tta=True, on_tile=lambda d, t: calls.append((d, t))
    )
    assert tiled.tiles == 9
    assert np.array_equal(tiled.image, whole.image)
    assert calls == [(i, 72) for i in range(1, 73)]  # progress counts the 8 passes per tile
    single = upscale_tiled(MODEL, rgb, size, scale, CPU, 32).image
    assert np.abs(single - whole.image).max() > 1e-3  # the ensemble is not one pass


def test_ensemble_of_a_flip_invariant_image_is_still_exact_for_flat_input():
    rgb = np.full((9, 11, 3), (0.2, 0.5, 0.9), np.float32)
    out = upscale_tiled(MODEL, rgb, (33, 40), (33 / 9, 40 / 11), CPU, 0, tta=True).image
    assert np.abs(out - rgb[0, 0]).max() < 1e-5
