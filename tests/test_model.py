"""The GSASR network: shapes, bounds, LIIF compatibility, cost, and weights files."""

from __future__ import annotations

import math

import pytest
import torch

from gsasr_cli.errors import GsasrError
from gsasr_cli.model import GSASR, ModelConfig, count_macs_per_lr_pixel
from gsasr_cli.weights_io import default_weights_path, load_model, save_weights

SMALL = ModelConfig(n_feats=8, n_resblocks=1, decoder_blocks=1)


@pytest.fixture(scope="module")
def model() -> GSASR:
    torch.manual_seed(0)
    return GSASR(SMALL).eval()


@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0, 3.7, 8.0])
def test_output_shapes_for_non_square_inputs(model, scale):
    lr = torch.rand(2, 3, 7, 12)
    out_size = (math.floor(7 * scale + 0.5), math.floor(12 * scale + 0.5))
    with torch.no_grad():
        out = model(lr, out_size, (scale, scale))
    assert out.shape == (2, 3, *out_size)
    assert torch.isfinite(out).all()


def test_per_axis_scales_render_natively(model):
    lr = torch.rand(1, 3, 6, 9)
    with torch.no_grad():
        out = model(lr, (11, 40))  # 1.83x by 4.44x
    assert out.shape == (1, 3, 11, 40)


def test_gaussians_stay_inside_the_rendering_window(model):
    with torch.no_grad():
        lr = torch.rand(1, 3, 5, 6)
        # Push the decoder's raw outputs far out to check the bounds hold at the extremes.
        model.decoder.head.bias.data.fill_(50.0)
        field = model.gaussians(lr, (2.0, 3.0))
        model.decoder.head.bias.data.zero_()
    assert field.means.shape == (1, 5, 6, SMALL.gaussians_per_pixel, 2)
    assert ((field.means >= 0) & (field.means <= 1)).all()
    assert (field.sigmas <= SMALL.sigma_max).all() and (field.sigmas >= SMALL.sigma_min).all()
    assert (field.rhos.abs() < 1).all()
    assert ((field.opacities >= 0) & (field.opacities <= 1)).all()


def test_untrained_model_reproduces_a_flat_image():
    """Initial opacities are calibrated so that a constant image stays constant."""
    net = GSASR(SMALL).eval()
    lr = torch.full((1, 3, 8, 8), 0.6)
    with torch.no_grad():
        out = net(lr, (24, 24))
    inner = out[:, :, 4:-4, 4:-4]  # the border lacks the neighbours outside the image
    torch.testing.assert_close(inner, torch.full_like(inner, 0.6), atol=0.03, rtol=0)


def test_encoder_parameter_names_match_liif():
    names = set(GSASR().encoder.state_dict())
    assert "head.0.weight" in names and "body.15.body.2.weight" in names
    assert "body.16.weight" in names and len(names) == 2 + 16 * 4 + 2


def test_decoder_budget_is_well_under_two_million_macs():
    macs = count_macs_per_lr_pixel(ModelConfig())
    assert macs["decoder"] < 1_000_000
    assert 1_100_000 < macs["encoder"] < 1_300_000  # EDSR-baseline: about 1.2 M


def test_weights_roundtrip(tmp_path, model):
    path = tmp_path / "w.safetensors"
    save_weights(model, path, dtype=torch.float32)
    loaded = load_model(path)
    assert loaded.cfg == model.cfg
    lr = torch.rand(1, 3, 5, 4)
    with torch.no_grad():
        assert torch.equal(loaded(lr, (9, 7)), model(lr, (9, 7)))


def test_loading_rejects_files_that_are_not_weights(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(GsasrError, match="bad.safetensors"):
        load_model(bad)
    with pytest.raises(GsasrError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_shipped_weights_load():
    model = load_model(default_weights_path())
    assert model.cfg.n_feats == 64 and model.cfg.n_resblocks == 16
