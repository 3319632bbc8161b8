"""The training script: samples, a few steps, export and resume."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from gsasr_cli.train import PatchSampler, main
from gsasr_cli.weights_io import load_model


def test_sampler_shapes_scales_and_quantisation():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)]
    sampler = PatchSampler(
        images, patch=16, batch=3, scale_range=(1.0, 4.0), anisotropic=1.0, seed=1
    )
    for _ in range(5):
        lr, hr, (sy, sx) = sampler()
        assert lr.shape == (3, 3, 16, 16)
        assert hr.shape == (3, 3, round(16 * sy), round(16 * sx))
        assert 1.0 <= sy <= 4.0 and 1.0 <= sx <= 4.0
        assert torch.equal(lr, torch.round(lr * 255) / 255)  # 8-bit, like real LR images
        assert lr.min() >= 0 and lr.max() <= 1


def test_a_short_run_exports_weights_and_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(data / f"{i}.png"), rng.integers(0, 256, (80, 90, 3), dtype=np.uint8))
    out = tmp_path / "run"
    args = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--patch",
        "8",
        "--batch",
        "2",
        "--log-every",
        "1",
        "--save-every",
        "2",
        "--threads",
        "1",
    ]
    main([*args, "--steps", "2"])
    first = load_model(out / "ema.safetensors")
    main([*args, "--steps", "3"])
    err = capsys.readouterr().err
    assert "resumed from" in err and "at step 2" in err and "step 3/3" in err
    second = load_model(out / "ema.safetensors")
    changed = [
        not torch.equal(a, b)
        for a, b in zip(first.decoder.parameters(), second.decoder.parameters(), strict=True)
    ]
    assert any(changed)
    # The encoder stays frozen unless --train-encoder.
    for a, b in zip(first.encoder.parameters(), second.encoder.parameters(), strict=True):
        assert torch.equal(a, b)
