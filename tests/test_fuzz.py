"""Fuzzing the image-loading path: any bytes give an image or the project's own error."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsasr_cli.errors import GsasrError
from gsasr_cli.imageio import decode


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    out = [cv2.imencode(ext, img)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".tif", ".webp")]
    out.append(cv2.imencode(".png", img.astype(np.uint16) * 200)[1].tobytes())
    return out


SEEDS = _seeds()


def _check(data: bytes) -> None:
    try:
        image = decode(data, "fuzz")
    except GsasrError as exc:
        assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
        return
    assert image.rgb.ndim == 3 and image.rgb.shape[2] == 3
    assert np.isfinite(image.rgb).all() and image.rgb.min() >= 0 and image.rgb.max() <= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    _check(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.integers(0, 10**6),
)
def test_mutated_images(seed, flips, cut):
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    _check(bytes(data[: max(1, cut % (len(data) + 1))]))
