"""The Python API: one call on arrays, PIL images and paths; same kinds out; thread-safe."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import gsasr_cli
from gsasr_cli import GsasrError, InvalidRequest, load_model, upscale

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.png"
MODEL = load_model(device="cpu")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:  # [18, 24, 3] uint8 RGB
    return cv2.imread(str(EXAMPLE))[40:58, 30:54, ::-1].copy()


def test_uint8_rgb_array_matches_the_cli(photo, tmp_path, run_cli):
    out = upscale(photo, scale=2.5, model=MODEL)
    assert out.dtype == np.uint8 and out.shape == (45, 60, 3)
    src = tmp_path / "p.png"
    cv2.imwrite(str(src), photo[:, :, ::-1])
    code, _, err = run_cli(["upscale", str(src), "-s", "2.5", "--device", "cpu"])
    assert code == 0, err
    assert np.array_equal(cv2.imread(str(tmp_path / "p_x2.5.png"))[:, :, ::-1], out)


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((18, 24), np.uint8),
        ((18, 24, 1), np.uint16),
        ((18, 24, 4), np.float32),
        ((18, 24, 3), np.float64),
    ],
)
def test_arrays_keep_dtype_and_layout(photo, shape, dtype):
    base = photo.astype(np.float64) / 255.0
    if len(shape) == 2 or shape[2] == 1:
        base = base.mean(axis=2).reshape(shape)
    elif shape[2] == 4:
        alpha = np.linspace(0, 1, 24)[None, :, None].repeat(18, 0)
        base = np.concatenate([base, alpha], axis=2)
    if np.issubdtype(dtype, np.integer):
        peak = np.iinfo(dtype).max
        image = np.rint(base * peak).astype(dtype)
    else:
        image = base.astype(dtype)
    out = upscale(image, width=48, model=MODEL)
    assert out.dtype == dtype and out.shape == (36, 48, *shape[2:])
    if dtype == np.float32 and shape[2] == 4:  # alpha upscaled, kept in [0, 1]
        assert 0 <= out.min() and out.max() <= 1
        assert out[:, 0, 3].max() < 0.05 and out[:, -1, 3].min() > 0.95


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "1", "CMYK"])
def test_pil_images_keep_their_mode(photo, mode):
    im = PILImage.fromarray(photo).convert(mode)
    out = upscale(im, scale=2, model=MODEL)
    want = {"P": "RGB", "1": "L", "CMYK": "RGB"}.get(mode, mode)
    assert isinstance(out, PILImage.Image) and out.mode == want and out.size == (48, 36)


def test_mode_i_keeps_its_values_or_is_refused(photo):
    """Mode I came back as I;16, and samples above 65535 were clipped without a word."""
    grey = np.asarray(PILImage.fromarray(photo).convert("L"), np.int32) * 257
    out = upscale(PILImage.fromarray(grey, "I"), scale=1, model=MODEL)
    assert out.mode == "I"
    np.testing.assert_array_equal(np.asarray(out), grey)
    with pytest.raises(InvalidRequest, match="0-65535"):
        upscale(PILImage.fromarray(grey * 10, "I"), scale=2, model=MODEL)


def test_a_big_endian_uint16_array_is_uint16(photo):
    """A '>u2' array was refused as an unsupported dtype; it comes back in its own order."""
    native = photo.astype(np.uint16) * 257
    swapped = native.astype(">u2")
    out = upscale(swapped, scale=2, model=MODEL)
    assert out.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(out, upscale(native, scale=2, model=MODEL))


def test_a_path_gives_an_array_with_orientation_applied(photo, tmp_path):
    src = tmp_path / "rotated.jpg"
    im = PILImage.fromarray(photo)
    exif = im.getexif()
    exif[0x0112] = 6  # stored sideways: upright is 18 wide, 24 tall
    im.save(src, exif=exif, quality=95)
    out = upscale(str(src), scale=2, model=MODEL)
    assert out.dtype == np.uint8 and out.shape == (48, 36, 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one"),
        ({"scale": 2, "width": 40}, "exactly one"),
        ({"scale": 0.5}, ">= 1"),
        ({"scale": float("nan")}, ">= 1"),
        ({"width": 10}, "shrink"),
        ({"size": (40, 0)}, "size"),
        ({"scale": 2, "precision": "fp8"}, "Precision"),
        ({"scale": 2, "alpha": "magic"}, "AlphaMode"),
        ({"scale": 2, "tile": 3}, "tile"),
        ({"scale": 2, "precision": "fp16"}, "CUDA"),
        ({"scale": 1000}, "over the limit"),
    ],
)
def test_bad_arguments_are_value_errors_in_neutral_words(photo, kwargs, match):
    with pytest.raises(ValueError, match=match) as exc:
        upscale(photo, model=MODEL, **kwargs)
    assert "--" not in str(exc.value)  # the library speaks of images, not flags
    assert isinstance(exc.value, InvalidRequest)


def test_bad_images_are_library_errors(tmp_path):
    with pytest.raises(ValueError, match="HxW"):
        upscale(np.zeros((4, 4, 2), np.uint8), scale=2, model=MODEL)
    with pytest.raises(ValueError, match="dtype"):
        upscale(np.zeros((4, 4, 3), np.int32), scale=2, model=MODEL)
    with pytest.raises(ValueError, match="NaN"):
        upscale(np.full((4, 4, 3), np.nan, np.float32), scale=2, model=MODEL)
    with pytest.raises(ValueError, match="list"):
        upscale([[1, 2]], scale=2, model=MODEL)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(GsasrError, match="bad.png"):
        upscale(bad, scale=2, model=MODEL)


def test_one_model_serves_threads_with_identical_results(photo):
    images = [np.roll(photo, k, axis=1) for k in range(6)]
    alone = [upscale(im, scale=3, model=MODEL) for im in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda im: upscale(im, scale=3, model=MODEL), images))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))


def test_tta_and_tiles(photo):
    plain = upscale(photo, scale=2, model=MODEL, tile=0)
    assert np.array_equal(upscale(photo, scale=2, model=MODEL, tile=16), plain)
    ensemble = upscale(photo.astype(np.float32) / 255, scale=2, model=MODEL, tta=True)
    assert np.abs(ensemble * 255 - plain).max() > 0.5  # a different, averaged result


def test_default_model_is_loaded_once():
    assert gsasr_cli.default_model("cpu") is gsasr_cli.default_model("cpu")


def test_importing_the_package_does_not_import_torch():
    code = "import sys, gsasr_cli; print('torch' in sys.modules, gsasr_cli.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", gsasr_cli.__version__]


def test_a_path_keeps_its_alpha_as_the_cli_writes_it(tmp_path, run_cli):
    """A path's alpha was dropped (RGBA came back RGB, grey + alpha came back grey)."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(3)
    la = rng.integers(0, 256, (10, 12, 2), dtype=np.uint8)
    rgba = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    for name, pixels, mode in (("la.png", la, "LA"), ("rgba.png", rgba, "RGBA")):
        PILImage.fromarray(pixels, mode).save(tmp_path / name)
        got = upscale(str(tmp_path / name), scale=2)
        assert got.shape == (20, 24, 4) and got.dtype == np.uint8
        code, _, err = run_cli(["upscale", str(tmp_path / name), "-s", "2", "-o",
                                str(tmp_path / f"cli_{name}")])  # fmt: skip
        assert code == 0, err
        cli = cv2.imread(str(tmp_path / f"cli_{name}"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, cli[:, :, [2, 1, 0, 3]])
        if mode == "LA":  # grey: three equal colour samples
            assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_a_float_pil_image_stays_float():
    """Mode F was converted to integers (values in [0, 1] became 0 or 1) and came back I;16."""
    from PIL import Image as PILImage

    x = np.linspace(0.1, 0.9, 16 * 16, dtype=np.float32).reshape(16, 16)
    got = upscale(PILImage.fromarray(x, "F"), scale=2)
    assert got.mode == "F" and got.size == (32, 32)
    y = np.asarray(got)
    assert 0.05 < y.min() and y.max() < 0.95 and len(np.unique(y)) > 100
    np.testing.assert_allclose(y, upscale(x, scale=2), atol=1e-6)


def test_floats_outside_0_1_are_refused_not_clipped():
    """Floats were clipped to [0, 1] without a word: a 0-255 float photo came out white.
    Float noise within half a 16-bit level of the ends is still taken, as its clip."""
    from PIL import Image as PILImage

    x = np.random.default_rng(1).random((10, 12, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\], got .* to 2[45]\d\.\d*"):
        upscale(x * 255, scale=2, model=MODEL)
    grey = x[:, :, 0].copy()
    grey[2, 3] = -0.01
    with pytest.raises(ValueError, match=r"got -0\.01 to"):
        upscale(PILImage.fromarray(grey, "F"), scale=2, model=MODEL)
    edge = x.copy()
    edge[0, 0], edge[1, 1] = 1 + 0.4 / 65535, -0.4 / 65535
    clipped = np.clip(edge, 0, 1)
    np.testing.assert_array_equal(
        upscale(edge, scale=2, model=MODEL), upscale(clipped, scale=2, model=MODEL)
    )


def test_a_size_past_the_limit_is_refused_before_converting(monkeypatch):
    """The array was converted to float32 (3.5 GB for 12000 x 12000 x 3) before the output
    limit, which needs only its shape, refused it."""
    import gsasr_cli.api as api

    def no_conversion(obj):
        raise AssertionError("converted before the size check")

    monkeypatch.setattr(api, "_to_image", no_conversion)
    big = np.broadcast_to(np.uint8(7), (12000, 12000, 3))
    with pytest.raises(InvalidRequest, match="over the limit"):
        upscale(big, scale=2)
    with pytest.raises(InvalidRequest, match="over the limit"):
        upscale(PILImage.new("1", (12000, 12000)), scale=2)


def test_numpy_numbers_are_taken_as_scales_and_sizes():
    """np.float32(2) and np.int64(40) were refused as "not a number"."""
    x = np.random.default_rng(0).random((10, 12, 3), dtype=np.float32)
    ref = upscale(x, scale=2)
    np.testing.assert_array_equal(upscale(x, scale=np.float32(2)), ref)
    np.testing.assert_array_equal(upscale(x, width=np.int64(24)), ref)
    np.testing.assert_array_equal(upscale(x, size=(np.int32(24), np.uint16(20))), ref)
    with pytest.raises(InvalidRequest, match="scale must be a number"):
        upscale(x, scale=np.True_)
    with pytest.raises(InvalidRequest, match="20x20 is 400 pixels, over the limit of 100 pixels"):
        upscale(x[:10, :10], scale=2, max_output_pixels=100)


def test_wrong_kinds_of_arguments_are_the_documented_errors(tmp_path):
    """A string as the model raised AttributeError, max_output_pixels=None TypeError, and
    a truncated file opened lazily by PIL an OSError."""
    from PIL import Image as PILImage

    x = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InvalidRequest, match="model must be one from load_model"):
        upscale(x, scale=2, model="foo")
    with pytest.raises(InvalidRequest, match="max_output_pixels must be a whole number"):
        upscale(x, scale=2, max_output_pixels=None)
    buf = tmp_path / "t.png"
    PILImage.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(buf)
    buf.write_bytes(buf.read_bytes()[:400])
    with PILImage.open(buf) as lazy, pytest.raises(GsasrError, match="PIL image: cannot be read"):
        upscale(lazy, scale=2)
    grey16 = tmp_path / "t16.png"  # the same for a 16-bit grey file (mode I;16 or I)
    PILImage.fromarray(np.random.default_rng(2).integers(0, 65536, (64, 64), np.uint16)).save(
        grey16
    )
    grey16.write_bytes(grey16.read_bytes()[:400])
    with PILImage.open(grey16) as lazy, pytest.raises(GsasrError, match="cannot be read"):
        assert lazy.mode.startswith("I")
        upscale(lazy, scale=2)


@pytest.mark.parametrize("value", ["bogus", "triton"])
def test_an_unusable_rasterizer_choice_is_an_invalid_request(monkeypatch, value):
    """GSASR_RASTERIZER naming what cannot run here is the library's own error, not a bare
    ValueError from the kernels package, and it comes before any rendering."""
    if value == "triton" and torch.cuda.is_available():
        pytest.skip("triton runs here")
    monkeypatch.setenv("GSASR_RASTERIZER", value)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InvalidRequest, match="GSASR_RASTERIZER"):
        upscale(np.zeros((8, 8, 3), np.uint8), scale=2, device="cpu")
