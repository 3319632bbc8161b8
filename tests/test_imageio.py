"""Image decoding and encoding: bit depth, grey, alpha, formats, atomic writes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gsasr_cli.errors import GsasrError
from gsasr_cli.imageio import FORMATS, Image, decode, encode, read_image, write_atomic


def test_colour_is_rgb_in_unit_range():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    image = decode(cv2.imencode(".png", bgr)[1].tobytes(), "x")
    assert image.rgb.dtype == np.float32 and image.rgb.shape == (2, 3, 3)
    assert (image.rgb[..., 0] == 1).all() and (image.rgb[..., 1:] == 0).all()
    assert image.bits == 8 and not image.grey and image.alpha is None


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_every_format_round_trips(ext):
    y, x = np.mgrid[0:16, 0:12] / 16.0
    rgb = np.stack([y, x, (x + y) / 2], axis=2).astype(np.float32)  # smooth, so JPEG is close
    data = encode(Image(rgb, None, 8, False), ext, quality=100)
    back = decode(data, f"x{ext}")
    assert back.size == (16, 12)
    if FORMATS[ext][0] in (".jpg", ".webp"):
        assert np.abs(back.rgb - rgb).mean() < 0.02
    else:
        assert np.abs(back.rgb - rgb).max() <= 0.5 / 255 + 1e-6


def test_sixteen_bit_png_stays_sixteen_bit():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    image = decode(cv2.imencode(".png", raw)[1].tobytes(), "deep.png")
    assert image.bits == 16
    back = cv2.imdecode(np.frombuffer(encode(image, ".png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, raw)


def test_grey_stays_grey_and_alpha_is_kept():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    image = decode(cv2.imencode(".png", grey)[1].tobytes(), "g.png")
    assert image.grey and image.rgb.shape == (3, 4, 3)
    back = cv2.imdecode(np.frombuffer(encode(image, ".png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.ndim == 2 and np.array_equal(back, grey)

    bgra = np.dstack([np.full((3, 4, 3), 100, np.uint8), grey])
    image = decode(cv2.imencode(".png", bgra)[1].tobytes(), "a.png")
    assert image.alpha is not None and np.allclose(image.alpha * 255, grey)
    back = cv2.imdecode(np.frombuffer(encode(image, ".png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.shape == (3, 4, 4) and np.array_equal(back, bgra)


@pytest.mark.parametrize(
    "data,reason", [(b"", "empty file"), (b"GIF89a" + b"\0" * 40, "not a readable")]
)
def test_bad_bytes_name_the_source(data, reason):
    with pytest.raises(GsasrError, match=f"^src.png: {reason}"):
        decode(data, "src.png")


def test_read_image_errors(tmp_path):
    with pytest.raises(GsasrError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(GsasrError, match="is a folder"):
        read_image(tmp_path)


def test_non_ascii_path_with_spaces(tmp_path):
    path = tmp_path / "fotos del año" / "ñandú 画像.png"
    path.parent.mkdir()
    write_atomic(path, encode(Image(np.full((4, 5, 3), 0.5, np.float32), None, 8, False), ".png"))
    assert read_image(path).size == (4, 5)


def test_atomic_write_replaces_and_leaves_nothing_behind(tmp_path: Path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert target.stat().st_mode & 0o044  # readable by others, not mkstemp's 0600
