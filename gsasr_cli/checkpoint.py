"""Resumable training checkpoints, as safetensors (no pickles).

One file holds the model and its EMA in float32, and optionally Adam's two moments; its
metadata holds the model config, the training config, the step and the wall time so far.
A run folder keeps the full file; the relay file committed to the repository drops the
moments to stay small, and a run resumed from it warms its learning rate up again while
Adam re-learns them. EMA tensors that equal the model's (a frozen encoder's: the average
of a constant is that constant, bit for bit) are stored once and named in the metadata,
which keeps a 6-block decoder's relay file at about 8.6 MB instead of 13.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .errors import GsasrError
from .files import make_folder, write_atomic
from .model import GSASR, ModelConfig


@dataclass
class Checkpoint:
    """What a training run needs to continue."""

    model: dict[str, torch.Tensor]  # parameter name -> float32 tensor
    ema: dict[str, torch.Tensor]
    adam: dict[str, tuple[torch.Tensor, torch.Tensor]] | None  # name -> (exp_avg, exp_avg_sq)
    adam_steps: int  # Adam's own step count (bias correction)
    config: ModelConfig
    train: dict[str, object]  # the run's hyperparameters (TrainConfig as a dict)
    step: int
    wall_s: float  # training wall time of all legs so far


def save_checkpoint(ckpt: Checkpoint, path: Path, *, with_adam: bool = True) -> None:
    """Write `ckpt` to `path` atomically (a temporary file renamed over it)."""
    tensors = {f"model/{k}": v for k, v in ckpt.model.items()}
    model = ckpt.model
    same = sorted(k for k, v in ckpt.ema.items() if k in model and torch.equal(v, model[k]))
    tensors |= {f"ema/{k}": v for k, v in ckpt.ema.items() if k not in same}
    if with_adam and ckpt.adam is not None:
        for k, (m, v) in ckpt.adam.items():
            tensors[f"adam/{k}/m"], tensors[f"adam/{k}/v"] = m, v
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    metadata = {
        "format": "gsasr-checkpoint-1",
        "config": json.dumps(ckpt.config.to_dict()),
        "train": json.dumps(ckpt.train),
        "step": str(ckpt.step),
        "wall_s": f"{ckpt.wall_s:.1f}",
        "adam_steps": str(ckpt.adam_steps if with_adam and ckpt.adam is not None else 0),
        "ema_as_model": json.dumps(same),
    }
    make_folder(path.parent, str(path))
    write_atomic(path, save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "gsasr-checkpoint-1":
                raise ValueError("no gsasr-checkpoint-1 format tag")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        config = ModelConfig(**json.loads(meta["config"]))
        train = json.loads(meta["train"])
        step, wall_s, adam_steps = int(meta["step"]), float(meta["wall_s"]), int(meta["adam_steps"])
        same = json.loads(meta.get("ema_as_model", "[]"))  # absent in files before it
        if not isinstance(same, list) or not all(isinstance(k, str) for k in same):
            raise ValueError("ema_as_model is not a list of names")
    except FileNotFoundError as exc:
        raise GsasrError(f"{path}: checkpoint not found") from exc
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as exc:
        raise GsasrError(f"{path}: not a gsasr training checkpoint ({exc})") from exc

    def group(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    model = group("model/")
    ema = group("ema/") | {k: model[k] for k in same if k in model}  # a missing one: load_into
    moments = group("adam/")
    adam = None
    if moments:
        names = {k.rsplit("/", 1)[0] for k in moments}
        adam = {n: (moments[f"{n}/m"], moments[f"{n}/v"]) for n in names}
    return Checkpoint(model, ema, adam, adam_steps, config, train, step, wall_s)


def model_state(model: GSASR) -> dict[str, torch.Tensor]:
    """The parameters of `model` (its buffers derive from the config)."""
    return {k: p.detach() for k, p in model.named_parameters()}


def load_into(model: GSASR, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy `state` into `model`'s parameters, all of them, strictly."""
    params = dict(model.named_parameters())
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise GsasrError(f"{path}: parameters do not match the model ({missing[:3]}, {extra[:3]})")
    for k, p in params.items():
        if state[k].shape != p.shape:  # copy_ would broadcast a [1] over the parameter
            raise GsasrError(
                f"{path}: {k} has shape {list(state[k].shape)}, the model needs {list(p.shape)}"
            )
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state[k])
