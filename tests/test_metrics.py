"""Y-PSNR and SSIM as the SR literature computes them."""

from __future__ import annotations

import math

import numpy as np

from gsasr_cli.metrics import psnr_y, rgb_to_y, ssim_y


def test_luma_of_black_and_white():
    assert rgb_to_y(np.zeros(3)) == 16.0
    assert abs(rgb_to_y(np.full(3, 255.0)) - 235.0) < 1e-9


def test_psnr_of_a_known_error():
    a = np.full((10, 10, 3), 100, np.uint8)
    b = a.copy()
    b[..., :] = 110  # grey: Y moves by 10 * 219 / 255
    dy = 10 * 219 / 255
    assert abs(psnr_y(a, b, 0) - 10 * math.log10(255**2 / dy**2)) < 1e-9
    assert psnr_y(a, a, 2) == float("inf")


def test_border_shave_ignores_the_edges():
    a = np.full((12, 12, 3), 50, np.uint8)
    b = a.copy()
    b[:2] = 0
    assert psnr_y(a, b, 2) == float("inf") and psnr_y(a, b, 1) < 40


def test_ssim_is_one_for_identical_and_lower_for_noise():
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 32)
    a = np.repeat((ramp[:, None] + ramp[None, :] / 4)[..., None], 3, axis=2).astype(np.uint8)
    assert abs(ssim_y(a, a, 0) - 1.0) < 1e-12
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert 0.3 < ssim_y(noisy, a, 0) < 0.8  # 0.56 for this noise; well below 1
