"""Model weights as safetensors, with the model config in the file's metadata."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .errors import GsasrError, InvalidRequest
from .files import make_folder, write_atomic
from .model import GSASR, ModelConfig

DEFAULT_WEIGHTS = "gsasr-edsr-baseline.safetensors"


def default_weights_path() -> Path:
    """The weights file shipped inside the installed package."""
    return Path(str(resources.files("gsasr_cli.weights").joinpath(DEFAULT_WEIGHTS)))


def save_weights(
    model: GSASR,
    path: Path,
    *,
    dtype: torch.dtype = torch.float16,
    extra: dict[str, str] | None = None,
) -> None:
    """Write the model's parameters (not its derived buffers) and config to `path`."""
    params = {
        name: p.detach().to("cpu", dtype).contiguous() for name, p in model.named_parameters()
    }
    metadata = {"config": json.dumps(model.cfg.to_dict()), "format": "gsasr-1", **(extra or {})}
    make_folder(path.parent, str(path))
    write_atomic(path, save(params, metadata=metadata))


def load_model(path: Path | None = None, device: torch.device | str = "cpu") -> GSASR:
    """Build the model described by a weights file and load it strictly, in float32."""
    model, _ = load_with_metadata(path or default_weights_path())
    return model.to(device).eval()


def load_with_metadata(path: Path) -> tuple[GSASR, dict[str, str]]:
    """The model of a weights file, on the CPU, and the file's metadata ("steps", ...)."""
    if not path.is_file():
        raise InvalidRequest(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        fields = _config_fields(metadata)
        cfg = ModelConfig(**fields)
    except _NotWeights as exc:
        raise GsasrError(f"{path}: not a gsasr weights file ({exc})") from None
    except (OSError, ValueError, TypeError, SafetensorError) as exc:
        raise GsasrError(f"{path}: not a gsasr weights file ({exc})") from exc
    integer = next((k for k, t in tensors.items() if not t.is_floating_point()), None)
    if integer is not None:
        raise GsasrError(
            f"{path}: not a gsasr weights file ({integer} holds {tensors[integer].dtype}, "
            "not floating-point numbers)"
        )
    tensors = {k: t.float() for k, t in tensors.items()}
    # Shapes first, on a model without memory: a small file may name a huge config.
    with torch.device("meta"):
        expected = {k: p.shape for k, p in GSASR(cfg).named_parameters()}
    wrong = [k for k, t in tensors.items() if k in expected and t.shape != expected[k]]
    if wrong:
        raise GsasrError(
            f"{path}: not a gsasr weights file ({wrong[0]} has shape "
            f"{tuple(tensors[wrong[0]].shape)}, the config needs {tuple(expected[wrong[0]])})"
        )
    # Buffers are derived from the config; every parameter must be in the file.
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise GsasrError(
            f"{path}: weights do not match the model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    bad = next((k for k, t in tensors.items() if not torch.isfinite(t).all()), None)
    if bad is not None:
        raise GsasrError(f"{path}: not a usable gsasr weights file (NaN or Inf in {bad})")
    model = GSASR(cfg)
    model.load_state_dict(tensors, strict=False)
    return model, metadata


class _NotWeights(Exception):
    """Why a file's metadata is not that of a weights file, in words."""


def _config_fields(metadata: dict[str, str]) -> dict:
    """The ModelConfig fields of a weights file's metadata."""
    fmt = metadata.get("format", "gsasr-1")
    if fmt == "gsasr-checkpoint-1":
        raise _NotWeights("a training checkpoint; its run folder has ema.safetensors")
    if fmt != "gsasr-1":
        raise _NotWeights(f"format {fmt[:40]!r}")
    if "config" not in metadata:
        raise _NotWeights("no config in its metadata")
    try:
        fields = json.loads(metadata["config"])
    except ValueError:
        raise _NotWeights("its config is not JSON") from None
    if not isinstance(fields, dict):
        raise _NotWeights("its config is not a JSON object")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise _NotWeights(f"unknown config field {unknown[0][:40]!r}")
    # Files written before colour and rendering modes existed used the legacy pair.
    fields.setdefault("color", "residual")
    fields.setdefault("render", "additive")
    return fields


def describe(path: Path) -> str:
    """One line on what a weights file holds (loading it strictly); GsasrError if unusable."""
    model, metadata = load_with_metadata(path)
    steps = metadata.get("steps", "")
    cfg, g = model.cfg, model.cfg.gaussians_per_pixel
    n = sum(p.numel() for p in model.parameters())
    recorded = steps.isdigit() and len(steps) < 13
    trained = f"{int(steps):,} training steps" if recorded else "training steps not recorded"
    return (
        f"{cfg.decoder_blocks}-block decoder, {g} Gaussian{'s' * (g != 1)} per LR pixel, "
        f"{cfg.color} colours, {cfg.render} rendering; {n / 1e6:.2f} M parameters; {trained}"
    )


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
