"""The PyTorch reference rasterizer against a naive per-pixel, per-Gaussian loop."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_gaussians
from gsasr_kernels import GaussianField, axis_map, rasterize
from gsasr_kernels._torch_impl import _rasterize


def _leaves(field: GaussianField) -> GaussianField:
    """The field's tensors as fresh leaves that require grad."""
    return GaussianField(*(t.detach().clone().requires_grad_() for t in field.tensors()))


def naive_render(field, out_h, out_w, sy, sx, radius):
    """Every Gaussian of the grid at every output pixel, from the formulas in the docstring."""
    means, sigmas, rhos, opacities, colors = field.tensors()
    b, h, w, g, _ = means.shape
    out = torch.zeros(b, colors.shape[-1], out_h, out_w, dtype=means.dtype)
    for i in range(out_h):
        py = (i + 0.5) / sy
        for j in range(out_w):
            px = (j + 0.5) / sx
            for y in range(h):
                for x in range(w):
                    dx = px - (x + means[:, y, x, :, 0])  # [B, G]
                    dy = py - (y + means[:, y, x, :, 1])
                    sx_, sy_ = sigmas[:, y, x, :, 0], sigmas[:, y, x, :, 1]
                    r = rhos[:, y, x]
                    q = (dx**2 / sx_**2 - 2 * r * dx * dy / (sx_ * sy_) + dy**2 / sy_**2) / (
                        1 - r**2
                    )
                    t = (dx**2 + dy**2) / radius**2
                    k = torch.exp(-q / 2) * torch.clamp(1 - t, min=0) ** 2
                    wgt = opacities[:, y, x] * k  # [B, G]
                    out[:, :, i, j] += torch.einsum("bg,bgc->bc", wgt, colors[:, y, x])
    return out


CASES = [
    # (H, W, G, C, out_h, out_w, radius): integer, non-integer, anisotropic, identity, odd sizes
    (3, 4, 2, 3, 6, 8, 1),
    (3, 4, 1, 3, 7, 9, 1),
    (2, 5, 4, 1, 7, 6, 1),
    (4, 3, 2, 3, 4, 3, 1),
    (3, 3, 2, 2, 8, 11, 2),
]


@pytest.mark.parametrize("h,w,g,c,out_h,out_w,radius", CASES)
def test_forward_and_gradients_match_naive_loop(h, w, g, c, out_h, out_w, radius):
    field = _leaves(random_gaussians(2, h, w, g, c, seed=h * w + g))
    params = field.tensors()
    sy, sx = out_h / h, out_w / w
    got = _rasterize(field, axis_map(out_h, sy, h), axis_map(out_w, sx, w), radius)
    want = naive_render(field, out_h, out_w, sy, sx, radius)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    v = torch.randn_like(want)
    grads_got = torch.autograd.grad((got * v).sum(), params)
    grads_want = torch.autograd.grad((want * v).sum(), params)
    for name, a, b in zip(
        ("means", "sigmas", "rhos", "opacities", "colors"), grads_got, grads_want, strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


def test_every_gaussian_contributes_only_within_the_window():
    """A single Gaussian reaches the output exactly where the naive sum says, nowhere else."""
    field = random_gaussians(1, 5, 5, 1, 1, seed=3)
    opacities = torch.zeros_like(field.opacities)
    opacities[0, 2, 2, 0] = 1.0  # one visible Gaussian in the middle cell
    field = GaussianField(field.means, field.sigmas, field.rhos, opacities, field.colors)
    out = _rasterize(field, axis_map(20, 4.0, 5), axis_map(20, 4.0, 5), 1)
    rows, cols = torch.nonzero(out[0, 0], as_tuple=True)
    # Its cell is 2, so only output pixels whose cell is 1..3 (pixels 4..15) may see it.
    assert rows.min() >= 4 and rows.max() <= 15 and cols.min() >= 4 and cols.max() <= 15
    assert out.abs().sum() > 0


def test_gradcheck_float64():
    params = _leaves(random_gaussians(1, 2, 3, 2, 2, seed=7)).tensors()
    rows, cols = axis_map(5, 2.5, 2), axis_map(7, 7 / 3, 3)
    assert torch.autograd.gradcheck(
        lambda *p: _rasterize(GaussianField(*p), rows, cols, 1), params, eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0, 3.7, 8.0])
def test_chunking_does_not_change_the_result(scale):
    field = random_gaussians(1, 6, 5, 4, 3, dtype=torch.float32, seed=11)
    oh, ow = math.floor(6 * scale + 0.5), math.floor(5 * scale + 0.5)
    rows, cols = axis_map(oh, scale, 6), axis_map(ow, scale, 5)
    whole = _rasterize(field, rows, cols, 1, chunk_pixels=1 << 20)
    chunked = _rasterize(field, rows, cols, 1, chunk_pixels=ow + 1)
    assert torch.equal(whole, chunked)


def test_output_region_renders_identically_to_the_whole():
    """A sub-rectangle of the output, rendered from a sub-grid with a halo, is bit-identical."""
    h, w, scale = 9, 8, 3.7
    field = random_gaussians(1, h, w, 4, 3, dtype=torch.float32, seed=5)
    oh, ow = math.floor(h * scale + 0.5), math.floor(w * scale + 0.5)
    whole = _rasterize(field, axis_map(oh, scale, h), axis_map(ow, scale, w), 1)
    y0, y1, x0, x1 = 10, 23, 7, 20  # output region
    cy0, cx0 = 1, 0  # first LR cell of the sub-grid: covers region cells -1 (halo)
    sub = field.crop(cy0, 8, cx0, 7)
    rows = axis_map(y1 - y0, scale, h, out_start=y0, lr_start=cy0)
    cols = axis_map(x1 - x0, scale, w, out_start=x0, lr_start=cx0)
    part = _rasterize(sub, rows, cols, 1)
    assert torch.equal(part, whole[:, :, y0:y1, x0:x1])


def test_axis_map_samples_pixel_centres():
    m = axis_map(7, 3.5, 2)
    u = (torch.arange(7, dtype=torch.float64) + 0.5) / 3.5
    torch.testing.assert_close(m.cell + m.frac, u, atol=0, rtol=0)
    assert m.cell.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert ((m.frac >= 0) & (m.frac <= 1)).all()


def test_axis_map_rejects_bad_scales():
    for bad in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            axis_map(4, bad, 2)


def test_public_rasterize_checks_shapes():
    field = random_gaussians(1, 2, 2, 2, 3)
    bad = GaussianField(field.means, field.sigmas[..., :1], *field.tensors()[2:])
    with pytest.raises(ValueError, match="sigmas"):
        rasterize(bad, axis_map(4, 2.0, 2), axis_map(4, 2.0, 2))
    # Output samples must lie on the field's cells, in order.
    with pytest.raises(ValueError, match="outside"):
        rasterize(field, axis_map(8, 2.0, 4), axis_map(4, 2.0, 2))


def test_rendering_is_deterministic():
    field = random_gaussians(1, 8, 8, 4, 3, dtype=torch.float32, seed=2)
    rows, cols = axis_map(30, 3.7, 8), axis_map(30, 3.7, 8)
    assert torch.equal(_rasterize(field, rows, cols, 1), _rasterize(field, rows, cols, 1))
