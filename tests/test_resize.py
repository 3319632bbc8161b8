"""MATLAB-style bicubic resizing."""

from __future__ import annotations

import pytest
import torch

from gsasr_cli.resize import imresize, resize_matrix


def test_halving_weights_match_matlab():
    # imresize(x, 0.5, 'bicubic') on 8 samples: the first output sample, written out
    # from MATLAB's kernel (a = -0.5, width 4 / 0.5, symmetric edges).
    row = resize_matrix(8, 4)[0]
    want = torch.tensor(
        [0.546875, 0.3984375, 0.1015625, -0.03515625, -0.01171875, 0, 0, 0], dtype=torch.float64
    )
    torch.testing.assert_close(row, want, atol=1e-7, rtol=0)


def test_doubling_weights_match_matlab():
    # x2 upscaling: output sample 2 (0-based) sits at input position 0.75.
    row = resize_matrix(6, 12)[2]
    # taps at positions -1, 0, 1, 2 with weights cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25)
    expected = torch.zeros(6, dtype=torch.float64)
    expected[0] = -0.0234375 + 0.2265625
    expected[1] = 0.8671875
    expected[2] = -0.0703125
    torch.testing.assert_close(row, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("n_in,n_out", [(7, 3), (10, 37), (48, 177), (5, 5), (13, 4)])
def test_rows_sum_to_one_and_constants_survive(n_in, n_out):
    m = resize_matrix(n_in, n_out)
    torch.testing.assert_close(m.sum(dim=1), torch.ones(n_out, dtype=torch.float64))
    img = torch.full((2, 3, n_in, n_in + 1), 0.3, dtype=torch.float64)
    out = imresize(img, n_out, n_out + 2)
    assert out.shape == (2, 3, n_out, n_out + 2)
    torch.testing.assert_close(out, torch.full_like(out, 0.3))


def test_same_size_is_identity():
    img = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(imresize(img, 9, 11), img)
