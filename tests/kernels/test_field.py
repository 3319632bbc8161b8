"""The Gaussian field type: shape checks and the helpers its callers use."""

from __future__ import annotations

import pytest
import torch
from conftest import random_gaussians
from gsasr_kernels import GaussianField


def test_shape_and_channels():
    field = random_gaussians(2, 5, 7, 4, 3)
    assert field.shape == (2, 5, 7, 4) and field.channels == 3
    field.check()


def test_crop_takes_cells_of_every_tensor():
    field = random_gaussians(1, 6, 5, 4, 3, seed=1)
    part = field.crop(1, 4, 2, 5)
    assert part.shape == (1, 3, 3, 4)
    for got, whole in zip(part.tensors(), field.tensors(), strict=True):
        assert torch.equal(got, whole[:, 1:4, 2:5])


def test_float_converts_every_tensor():
    field = random_gaussians(1, 2, 3, 2, 1, dtype=torch.float16).float()
    assert {t.dtype for t in field.tensors()} == {torch.float32}


def test_with_colors_keeps_the_geometry():
    field = random_gaussians(1, 2, 3, 2, 3)
    four = field.with_colors(torch.ones(1, 2, 3, 2, 4, dtype=field.colors.dtype))
    assert four.channels == 4 and four.means is field.means
    four.check()


@pytest.mark.parametrize(
    "index, shape, match",
    [
        (0, (1, 2, 3, 2), "means"),
        (1, (1, 2, 3, 2, 1), "sigmas"),
        (2, (1, 2, 3, 1), "rhos"),
        (3, (1, 2, 2, 2), "opacities"),
        (4, (1, 2, 3, 1, 3), "colors"),
        (4, (1, 2, 3, 2, 0), "colors"),
    ],
)
def test_check_names_the_bad_tensor(index, shape, match):
    tensors = list(random_gaussians(1, 2, 3, 2, 3).tensors())
    tensors[index] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        GaussianField(*tensors).check()
