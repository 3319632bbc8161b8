"""Shared helpers for the test suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsasr_kernels import GaussianField


def random_gaussians(
    b: int,
    h: int,
    w: int,
    g: int,
    c: int = 3,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    device: str = "cpu",
) -> GaussianField:
    """A seeded random Gaussian field inside the rasterizer's valid ranges."""
    gen = torch.Generator().manual_seed(seed)

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    means = u(b, h, w, g, 2)
    sigmas = 0.08 + 0.67 * u(b, h, w, g, 2)
    rhos = 0.9 * (2 * u(b, h, w, g) - 1)
    opacities = u(b, h, w, g)
    colors = torch.randn(b, h, w, g, c, generator=gen, dtype=torch.float64)
    return GaussianField(
        *(t.to(device=device, dtype=dtype) for t in (means, sigmas, rhos, opacities, colors))
    )


def graphics_and_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """[h, w, 3] float32: noise (a photograph to the palette clamp) with a band of 4-colour
    pixel art in blocks of 1-3 pixels across the middle, so that tiles cut through both
    and through their boundaries."""
    rng = np.random.default_rng(seed)
    rgb = rng.random((h, w, 3), dtype=np.float32)
    palette = rng.random((4, 3), dtype=np.float32)
    n = max(h, w)
    ys = np.repeat(np.arange(n), rng.integers(1, 4, n))[:h]  # block of each row
    xs = np.repeat(np.arange(n), rng.integers(1, 4, n))[:w]  # and of each column
    art = palette[rng.integers(0, 4, (n, n))[ys][:, xs]]
    rgb[h // 4 : 3 * h // 4] = art[h // 4 : 3 * h // 4]
    return rgb


@pytest.fixture
def run_cli(capsys):
    """Run `gsasr` in-process: run_cli(argv) -> (exit code, stdout, stderr)."""
    from gsasr_cli.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return run
