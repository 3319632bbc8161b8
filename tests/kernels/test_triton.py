"""Triton rasterizer against the PyTorch reference: forward values and all five gradients.

Kernel tests run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1:
    TRITON_INTERPRET=1 pytest -m triton tests/kernels/test_triton.py
"""

from __future__ import annotations

import pytest
import torch
from conftest import random_gaussians
from gsasr_kernels import GaussianField, axis_map, rasterize, rasterizer_path, triton_interpret
from gsasr_kernels._torch_impl import _rasterize

INTERPRET = triton_interpret()
NAMES = ("means", "sigmas", "rhos", "opacities", "colors")


def _kernel_device() -> tuple[str | None, str]:
    try:
        import triton  # noqa: F401
    except ImportError:
        return None, "Triton is not installed"
    if torch.cuda.is_available() and not INTERPRET:
        return "cuda", ""
    if INTERPRET:
        return "cpu", ""
    return None, "needs a CUDA device, or TRITON_INTERPRET=1 to run the kernels on the CPU"


DEVICE, SKIP_REASON = _kernel_device()
kernel_test = pytest.mark.skipif(DEVICE is None, reason=SKIP_REASON)

# (dtype, atol, rtol). The kernels compute in fp32 from the rounded inputs and round once
# when they store, so low precision is held to its own rounding against the fp32 reference
# fed the same rounded inputs: fp16 rounds to nearest (2^-11 relative, rtol 2^-10); bf16
# gets a whole ulp (2^-7) because the interpreter truncates to bf16 where GPUs round to
# nearest. fp32 differs from the reference by summation order only: measured under 2e-6
# absolute at rtol 1e-5 on these cases. atol covers gradients that cancel to near zero.
DTYPES = [
    pytest.param(torch.float32, 1e-5, 1e-5, id="fp32"),
    pytest.param(torch.float16, 1e-4, 1e-3, id="fp16"),
    pytest.param(torch.bfloat16, 1e-4, 8e-3, id="bf16"),
]

# (B, H, W, G, C, scale_y, scale_x, radius): odd output sizes, every scale the model sees
# (x1: one pixel per cell; x8: more pixels per cell than one thread holds), anisotropic
# scales, G = 1 and C = 1, 16 Gaussians per cell, the model's C = 4 (colour + weight
# sum), radius 2 and a 1x1 field.
CASES = [
    pytest.param(1, 20, 5, 4, 3, 1.0, 1.0, 1, id="x1-narrow"),
    pytest.param(1, 7, 12, 4, 3, 1.7, 1.7, 1, id="x1.7"),
    pytest.param(2, 6, 9, 4, 3, 2.0, 2.0, 1, id="x2-batch2"),
    pytest.param(1, 5, 6, 4, 3, 3.7, 3.7, 1, id="x3.7"),
    pytest.param(1, 3, 4, 4, 3, 8.0, 8.0, 1, id="x8"),
    pytest.param(1, 8, 5, 4, 3, 1.5, 3.7, 1, id="aniso-1.5x3.7"),
    pytest.param(1, 6, 7, 1, 1, 2.0, 3.7, 1, id="G1-C1"),
    pytest.param(1, 5, 5, 4, 3, 2.0, 2.0, 2, id="radius2"),
    pytest.param(1, 4, 5, 16, 3, 4.0, 4.0, 1, id="x4-G16"),
    pytest.param(1, 5, 4, 4, 4, 3.0, 2.5, 1, id="C4-x3x2.5"),
    pytest.param(1, 1, 1, 4, 3, 4.0, 4.0, 1, id="1x1"),
]


def _params(b, h, w, g, c, seed):
    """Seeded fp32 Gaussian parameters in the ranges the model produces."""
    return list(random_gaussians(b, h, w, g, c, dtype=torch.float32, seed=seed).tensors())


def _assert_close(name, got, want, atol, rtol):
    """assert_close that names the first mismatching indices."""
    got = got.detach().float().cpu()
    want = want.detach().float().cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    bad = ~torch.isclose(got, want, atol=atol, rtol=rtol)
    if bad.any():
        idx = bad.nonzero()[:5]
        rows = [
            f"  {tuple(i.tolist())}: got {got[tuple(i)]:.7g}, want {want[tuple(i)]:.7g}"
            for i in idx
        ]
        pytest.fail(
            f"{name}: {int(bad.sum())} of {bad.numel()} elements differ "
            f"(atol={atol}, rtol={rtol}); first:\n" + "\n".join(rows)
        )


def _compare(b, h, w, g, c, sy, sx, radius, dtype, atol, rtol, seed=0, transform=None):
    from gsasr_kernels.triton_rasterize import rasterize_triton

    rows = axis_map(round(h * sy), sy, h)
    cols = axis_map(round(w * sx), sx, w)
    # Both sides see the same rounded inputs: the reference in fp32, the kernel in `dtype`.
    low = [t.to(dtype) for t in _params(b, h, w, g, c, seed)]
    ref_in = [t.float().clone().requires_grad_() for t in low]
    ker_in = [t.to(DEVICE).clone().requires_grad_() for t in low]
    ref = _rasterize(GaussianField(*ref_in), rows, cols, radius)
    v = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    args = transform(ker_in) if transform else ker_in
    out = rasterize_triton(GaussianField(*args), rows, cols, radius)
    assert out.dtype == dtype
    _assert_close("forward", out, ref, atol, rtol)

    ref_grads = torch.autograd.grad((ref * v.float()).sum(), ref_in)
    grads = torch.autograd.grad((out * v.to(DEVICE)).sum(), ker_in)
    for name, got, want in zip(NAMES, grads, ref_grads, strict=True):
        assert got.dtype == dtype, name
        _assert_close(f"grad {name}", got, want, atol, rtol)


@pytest.mark.triton
@kernel_test
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("b, h, w, g, c, sy, sx, radius", CASES)
def test_matches_reference(b, h, w, g, c, sy, sx, radius, dtype, atol, rtol):
    _compare(b, h, w, g, c, sy, sx, radius, dtype, atol, rtol)


@pytest.mark.triton
@kernel_test
def test_non_contiguous_inputs():
    """Strided parameters are made contiguous by the wrapper, not misread by the kernel."""

    def strided(ts):
        # Views of transposed copies: same values, non-unit strides.
        return [t.transpose(1, 2).contiguous().transpose(1, 2) for t in ts]

    _compare(1, 6, 5, 4, 3, 2.0, 2.0, 1, torch.float32, 1e-5, 1e-5, transform=strided)


@pytest.mark.triton
@kernel_test
def test_deterministic():
    """No atomics: two runs give bit-identical outputs and gradients."""
    from gsasr_kernels.triton_rasterize import rasterize_triton

    rows, cols = axis_map(17, 3.7, 5), axis_map(11, 1.7, 7)
    runs = []
    for _ in range(2):
        p = [t.to(DEVICE).requires_grad_() for t in _params(1, 5, 7, 4, 3, seed=3)]
        out = rasterize_triton(GaussianField(*p), rows, cols, 1)
        runs.append((out, *torch.autograd.grad(out.square().sum(), p)))
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


@pytest.mark.triton
@kernel_test
def test_the_launch_config_does_not_change_a_bit():
    """Every config the autotuner may pick gives the same output and gradient bits."""
    import triton
    from gsasr_kernels import triton_rasterize as tr

    field = GaussianField(*[t.to(DEVICE) for t in _params(1, 5, 7, 4, 3, seed=4)])
    samples = tr.Samples.of(axis_map(17, 3.7, 5), axis_map(11, 1.7, 7), 5, 7, field.means.device)
    v = torch.randn(1, 3, 17, 11, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    runs = []
    for block, warps in ((32, 1), (64, 2), (256, 8)):
        out, fwd = tr._fwd_launches(field, samples, 1)
        grads, bwd = tr._bwd_launches(field, samples, 1, v)
        for launch in fwd + bwd:  # in order: the pack before the render
            kernel, meta = launch.kernel, dict(launch.meta)
            if isinstance(kernel, triton.runtime.Autotuner):  # bypass it: force the config
                kernel, meta = kernel.fn, meta | {"BLOCK_N": block, "num_warps": warps}
            kernel[launch.grid(meta)](*launch.args, **meta)
        runs.append((out, *grads.tensors()))
    for name, *results in zip(("output", *NAMES), *runs, strict=True):
        for other in results[1:]:
            assert torch.equal(results[0], other), name


@pytest.mark.triton
@kernel_test
def test_a_region_renders_bitwise_like_the_whole():
    """Tiling is exact through the kernels too: a sub-grid with a halo renders its output
    region bit-identically (each pixel's arithmetic does not depend on its block)."""
    from gsasr_kernels.triton_rasterize import rasterize_triton

    h, w, scale = 9, 8, 3.7
    field = GaussianField(*[t.to(DEVICE) for t in _params(1, h, w, 4, 3, seed=5)])
    oh, ow = round(h * scale), round(w * scale)
    whole = rasterize_triton(field, axis_map(oh, scale, h), axis_map(ow, scale, w), 1)
    y0, y1, x0, x1 = 10, 23, 7, 20  # output region; its cells are 2..6 x 1..5
    rows = axis_map(y1 - y0, scale, h, out_start=y0, lr_start=1)
    cols = axis_map(x1 - x0, scale, w, out_start=x0, lr_start=0)
    part = rasterize_triton(field.crop(1, 8, 0, 7), rows, cols, 1)
    assert torch.equal(part, whole[:, :, y0:y1, x0:x1])


@pytest.mark.triton
@kernel_test
def test_dispatch_forced_triton_runs_kernels(monkeypatch):
    """GSASR_RASTERIZER=triton sends `rasterize` to the kernels (on CPU via the interpreter)."""
    monkeypatch.setenv("GSASR_RASTERIZER", "triton")
    assert rasterizer_path(DEVICE)[0] == "triton"
    p = [t.to(DEVICE) for t in _params(1, 4, 4, 4, 3, seed=5)]
    rows, cols = axis_map(8, 2.0, 4), axis_map(8, 2.0, 4)
    out = rasterize(GaussianField(*p), rows, cols, 1)
    want = _rasterize(GaussianField(*[t.cpu() for t in p]), rows, cols, 1)
    _assert_close("forward", out, want, 1e-5, 1e-5)
    with pytest.raises(ValueError, match="float64"):
        rasterize(GaussianField(*[t.double() for t in p]), rows, cols, 1)


def test_cpu_uses_reference_by_default(monkeypatch):
    monkeypatch.delenv("GSASR_RASTERIZER", raising=False)
    name, why = rasterizer_path("cpu")
    assert (name, why.startswith("no CUDA")) == ("torch", True)
    p = _params(1, 4, 5, 4, 3, seed=7)
    rows, cols = axis_map(9, 2.3, 4), axis_map(11, 2.3, 5)
    # Bit-identical to the reference: the kernels would round differently.
    field = GaussianField(*p)
    assert torch.equal(rasterize(field, rows, cols, 1), _rasterize(field, rows, cols, 1))


def test_forced_torch(monkeypatch):
    monkeypatch.setenv("GSASR_RASTERIZER", "torch")
    assert rasterizer_path("cuda") == ("torch", "forced by GSASR_RASTERIZER=torch")


def test_forced_triton_on_cpu_needs_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("GSASR_RASTERIZER", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert rasterizer_path("cpu")[0] == "unavailable"
    p = _params(1, 3, 3, 4, 3, seed=9)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        rasterize(GaussianField(*p), axis_map(6, 2.0, 3), axis_map(6, 2.0, 3), 1)


def test_unknown_mode_raises(monkeypatch):
    monkeypatch.setenv("GSASR_RASTERIZER", "cuda")
    p = _params(1, 3, 3, 4, 3, seed=11)
    with pytest.raises(ValueError, match="GSASR_RASTERIZER='cuda' is not one of"):
        rasterize(GaussianField(*p), axis_map(6, 2.0, 3), axis_map(6, 2.0, 3), 1)


@pytest.mark.triton
@kernel_test
def test_the_model_renders_through_the_kernels(monkeypatch):
    """What `gsasr upscale` and training do on CUDA: the model's render takes the kernels."""
    from gsasr_kernels import triton_rasterize

    from gsasr_cli.model import GSASR, ModelConfig

    torch.manual_seed(0)
    model = GSASR(ModelConfig(n_feats=8, n_resblocks=1, decoder_blocks=1)).to(DEVICE).eval()
    lr = torch.rand(1, 3, 6, 7, device=DEVICE)
    calls = []
    real = triton_rasterize.rasterize_triton
    monkeypatch.setattr(
        triton_rasterize, "rasterize_triton", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    monkeypatch.setenv("GSASR_RASTERIZER", "triton")
    with torch.no_grad():
        through_kernels = model(lr, (13, 20))
    assert calls, "the Triton kernels were not called"
    monkeypatch.setenv("GSASR_RASTERIZER", "torch")
    with torch.no_grad():
        reference = model(lr, (13, 20))
    _assert_close("model output", through_kernels, reference, 1e-5, 1e-5)
